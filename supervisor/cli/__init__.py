"""sandboxctl: the command-line client (`main.py` is the entry, one module per verb).

A verb that only asks the daemon is an interpreter start, a few imports, one request and a
print, so its imports are most of its time (issue 23: 40 ms end to end). Hence: a verb's own
module alone is imported (`main._modules`); every verb that only asks the daemon but `exec`
(status, start, stop, restart, reload, images, events, top, logs, run) declares a `SIMPLE`
spec, with which `main.simple_args` reads its plainly valid lines (`simple.py`), and argparse
(`parsing.py`, with the `re` it imports) is loaded only for the rest, `--help` and errors; HTTP
is `unixhttp.py` on `_socket`, not http.client (the email package and ssl); answers are read by
`jsonread.py` (the C scanner) and written by `jsonwrite.py` (the C encoder; json itself only
for `status --json`'s indented text on a terminal); the heavy packages
(pydantic, structlog, aiohttp) only for verbs that read unit files; no dataclasses (with
inspect, ast and dis, ~10 ms): records are plain slotted classes; no enum (with functools and
collections, ~5 ms): the contract's names are `names.py`'s strings; and no `typing` at run
time: modules write `TYPE_CHECKING = False` and import typing's names under it, which mypy
reads as typing's own TYPE_CHECKING. `tests/unit/cli/test_client_imports.py` keeps it so.
"""
