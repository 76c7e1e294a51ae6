#!/usr/bin/env bash
# Run the cgroup-v2 integration tests (`-m cgroup_v2`) inside a pure cgroup v2 VM, in one boot.
# Our dev/CI hosts are v1/hybrid, so this is the only place the v2 paths run on a real kernel.
# Extra arguments go to pytest. SANDBOXD_SKIP_VM=1 turns a missing VM rig into a skip.
set -uo pipefail
cd "$(dirname "$0")/.."

rig=../shared/vm/run
if [[ ! -x $rig ]]; then
    if [[ ${SANDBOXD_SKIP_VM:-} == 1 ]]; then
        echo "test-v2: $rig not found; skipping the cgroup v2 tests (SANDBOXD_SKIP_VM=1)" >&2
        exit 0
    fi
    echo "test-v2: $rig not found: the cgroup v2 tests need the VM rig beside the checkout" \
        "(set SANDBOXD_SKIP_VM=1 to skip them)" >&2
    exit 1
fi
if [[ -f /sys/fs/cgroup/cgroup.controllers && ${SANDBOXD_FORCE_VM:-} != 1 ]]; then
    # A pure v2 host already ran `-m cgroup_v2` in the host pytest run.
    echo "test-v2: this host is cgroup v2 itself; skipping the VM (SANDBOXD_FORCE_VM=1 to boot it)" >&2
    exit 0
fi
if [[ ! -x .venv/bin/pytest ]]; then
    echo "test-v2: .venv/bin/pytest missing: run scripts/setup.sh first" >&2
    exit 1
fi

# The guest is TCG-emulated (~5x slower Python): generous per-test timeout; the rig passes
# pytest's exit status through (125 = the rig itself failed).
exec "$rig" --timeout "${VM_TIMEOUT:-1200}" -- \
    .venv/bin/pytest -m cgroup_v2 -p no:cacheprovider -q -ra tests/integration "$@"
