"""One module per sandboxctl verb, each with `register(subparsers)` and `run(args) -> int`.

`supervisor/cli/main.py` lists them in its COMMANDS table; a new verb is a new module plus one
row there.
"""
