#!/usr/bin/env bash
# Run the cgroup-v2 integration tests (`-m cgroup_v2`), the whole security suite
# (tests/security, `-m security`) and the wall-clock step test (`-m wall_clock`) inside a pure
# cgroup v2 VM, in one boot.
# Our dev/CI hosts are v1/hybrid, so this is the only place the v2 paths run on a real kernel.
# Extra arguments go to pytest. Without the rig this layer is skipped (loudly), except under
# CI=true, where a missing rig fails unless SANDBOXD_SKIP_VM=1.
set -uo pipefail
cd "$(dirname "$0")/.."

rig=../shared/vm/run
if [[ ! -x $rig ]]; then
    # A clone on its own has no rig: skip loudly. CI has it, so there a missing rig is a failure.
    if [[ ${SANDBOXD_SKIP_VM:-} == 1 || ${CI:-} != true ]]; then
        echo "test-v2: SKIPPED: no VM rig at $rig; the cgroup v2 tests run in CI, which has" \
            "the rig beside the checkout" >&2
        exit 0
    fi
    echo "test-v2: $rig not found: CI needs the VM rig beside the checkout" \
        "(SANDBOXD_SKIP_VM=1 skips this layer)" >&2
    exit 1
fi
if [[ -f /sys/fs/cgroup/cgroup.controllers && ${SANDBOXD_FORCE_VM:-} != 1 ]]; then
    # A pure v2 host already ran `-m cgroup_v2` in the host pytest run.
    echo "test-v2: SKIPPED: this host is cgroup v2 itself, so the host run had -m cgroup_v2" \
        "(SANDBOXD_FORCE_VM=1 boots the VM anyway)" >&2
    exit 0
fi
if [[ ! -x .venv/bin/pytest ]]; then
    echo "test-v2: .venv/bin/pytest missing: run scripts/setup.sh first" >&2
    exit 1
fi

# The guest is TCG-emulated (~5x slower Python): generous per-test timeout; the rig passes
# pytest's exit status through (125 = the rig itself failed).
# The VM is thrown away after the run, so it is also where the wall clock may be stepped
# (`wall_clock`: tests/reliability/test_clock_step.py).
# Two security files stay on the host: hostile layers (unpack) and hostile resolv.conf links
# (openat2 RESOLVE_IN_ROOT) behave the same on either cgroup version, and their Python unpacking
# under TCG is slow; the image tests proper (tests/integration/test_images.py) run here.
# shellcheck source=scripts/vm-packages.sh
source scripts/vm-packages.sh
exec "$rig" --timeout "${VM_TIMEOUT:-2400}" -- \
    env SANDBOXD_MAY_STEP_CLOCK=1 \
    .venv/bin/pytest -m "cgroup_v2 or security or wall_clock" -p no:cacheprovider -q -ra \
    tests/integration tests/security tests/reliability/test_clock_step.py \
    --ignore=tests/security/test_image_layers.py --ignore=tests/security/test_image_resolv.py "$@"
