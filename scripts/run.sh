#!/usr/bin/env bash
# Set up this checkout, then run sandboxd in the foreground on the example units in units/.
# Runtime state, logs and data go to the usual places (/run/sandboxd, /var/log/sandboxd,
# /var/lib/sandboxd); Ctrl-C stops the daemon and every service it started.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --no-next
exec .venv/bin/sandboxd --units-dir "$PWD/units" "$@"
