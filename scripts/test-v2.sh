#!/usr/bin/env bash
# Run the cgroup v2 tests (`-m cgroup_v2`: tests/integration and the cgroup-touching files of
# tests/security) and the wall-clock step test (`-m wall_clock`) inside a pure cgroup v2 VM, in
# one boot.
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
#
# What runs here is what depends on the cgroup version; the rest of the suite runs in the host
# layer only, where Python is ~5x faster. tests/security, file by file:
# - here (marked cgroup_v2): test_bombs.py (the fork and memory bombs are stopped by the unit's
#   pids and memory limits, v2 files) and test_escape_daemon.py (the battery's device nodes are
#   refused by the devices cgroup, a BPF program on v2; test_escape.py runs on v1 only);
# - host only, each the same on either cgroup version:
#   test_seccomp_program.py (a BPF interpreter in Python over the compiled filter, no kernel:
#   85 CPU-bound tests, the slowest under TCG), test_seccomp_docker.py (seccomp refusals and
#   masked /proc and /sys paths: the filter and the mounts, no cgroup file; 253 tests),
#   test_bridge_spoofing.py and test_published_ports.py (nftables and bridge rules; the v2 VM
#   still loads them in tests/integration/test_daemon_nat.py), test_privileges.py
#   (capabilities, tmpfs sizes), test_userns_isolation.py (id mappings on files; the cgroup is
#   joined before the user namespace, as without one), test_api_authz.py (socket peer
#   credentials), test_daemon_dirs.py and test_symlink_sources.py (the daemon's files and bind
#   sources), test_output_hygiene.py (sandboxctl's text), test_refused_units.py (validate),
#   test_image_layers.py and test_image_resolv.py (unpacking and openat2 path resolution; the
#   image tests proper, tests/integration/test_images.py, run here).
# A new security file whose defence is a cgroup gets `pytest.mark.cgroup_v2` to run here too.
selection=(-m "cgroup_v2 or wall_clock" tests/integration tests/security
    tests/reliability/test_clock_step.py)
# The bytecode (and pytest's rewritten test modules) written here, not compiled in emulation in
# every process of the VM.
./scripts/bytecode.sh "${selection[@]}"
# shellcheck source=scripts/vm-packages.sh
source scripts/vm-packages.sh
exec "$rig" --timeout "${VM_TIMEOUT:-2400}" -- \
    env SANDBOXD_MAY_STEP_CLOCK=1 \
    .venv/bin/pytest -p no:cacheprovider -q -ra --durations=25 "${selection[@]}" "$@"
