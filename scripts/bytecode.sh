#!/usr/bin/env bash
# Write the bytecode of this checkout's own Python (supervisor/, tests/) on the host, once, before
# a test layer runs: `scripts/bytecode.sh [PYTEST_ARGS...]`.
#
# The venv's packages come compiled from pip, but the checkout's modules (an editable install)
# are compiled by whatever imports them first, and not even kept when PYTHONDONTWRITEBYTECODE
# is set (as in some CI shells): then every daemon, sandboxctl and pytest process compiles the
# ~30k lines again. In the VMs, which share the checkout and run the very same interpreter,
# that compiling is emulated (~5x slower) and repeated in every process. Python reads bytecode
# that is there whatever PYTHONDONTWRITEBYTECODE says, so writing it here is enough.
# With PYTEST_ARGS, pytest also collects those tests here, which writes the assertion-rewritten
# bytecode of the test modules (pytest's own cache, checked against each source's mtime and
# size), so a VM's pytest does not rewrite them again either.
# Up-to-date files are skipped: a second call costs about a second. Only a speed-up: a failure
# here (a syntax error, a collection error) is left for the test run itself to report in full.
set -uo pipefail
cd "$(dirname "$0")/.."

env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m compileall -q -j 0 supervisor tests >/dev/null ||
    echo "bytecode: compileall failed; the tests will say why" >&2
if (($#)); then
    env -u PYTHONDONTWRITEBYTECODE .venv/bin/pytest --collect-only -q -p no:cacheprovider "$@" \
        >/dev/null || echo "bytecode: collecting $* failed; the tests will say why" >&2
fi
exit 0
