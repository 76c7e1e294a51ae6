#!/usr/bin/env bash
# Set up this checkout, then run every test layer:
#   1. lint and types (ruff, mypy),
#   2. unit + integration tests on this host (real namespaces and cgroups; v1 or v2, as the host is),
#   3. the cgroup v2 tests inside the ../shared/vm rig (pure v2 VM), unless the host is pure v2,
#   4. the systemd end-to-end test (install, systemctl start/reload/restart/stop, watchdog,
#      uninstall) inside the rig's systemd VM.
#   Set SANDBOXD_SKIP_VM=1 to skip 3 and 4 where the rig is unavailable.
# Extra arguments go to the host pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# pytest exits 5 when it collected nothing: that must fail here, never pass silently.
.venv/bin/pytest -p no:cacheprovider "$@"

./scripts/test-v2.sh
./scripts/test-systemd.sh
