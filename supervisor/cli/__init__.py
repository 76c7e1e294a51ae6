"""sandboxctl: the command-line client (`main.py` is the entry, one module per verb).

A verb that only asks the daemon is an interpreter start, a few imports, one request and a
print, so its imports are most of its time (issue 23: 40 ms end to end). Hence: a verb's own
module alone is imported (`main._modules`); HTTP is `unixhttp.py`, not http.client (the email
package and ssl); the heavy packages (pydantic, structlog, aiohttp) only for verbs that read
unit files; and no `typing` at run time: modules write `TYPE_CHECKING = False` and import
typing's names under it, which mypy reads as typing's own TYPE_CHECKING.
`tests/unit/cli/test_client_imports.py` keeps it so.
"""
