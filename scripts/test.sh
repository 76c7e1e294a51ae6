#!/usr/bin/env bash
# Set up this checkout, then run every test layer:
#   1. lint and types (ruff, mypy),
#   2. unit + integration tests on this host (real namespaces and cgroups; v1 or v2, as the host is),
#   3. the cgroup v2 (and systemd) tests inside the ../shared/vm rig, when the host itself is not
#      a pure v2 host (set SANDBOXD_SKIP_VM=1 to skip, e.g. where the rig is unavailable).
# Extra arguments go to the host pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# pytest exits 5 when it collected nothing: that must fail here, never pass silently.
.venv/bin/pytest -p no:cacheprovider "$@"

if [[ -x scripts/test-v2.sh ]]; then
    ./scripts/test-v2.sh
fi
