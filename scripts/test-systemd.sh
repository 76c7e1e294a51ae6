#!/usr/bin/env bash
# Run the systemd end-to-end tests (tests/systemd: the Debian package installed, upgraded with
# a service kept running, and purged; then install.sh: install, start, reload, restart, OOM,
# journal, watchdog, stop, uninstall) inside ONE `../shared/vm/run --systemd` boot: a
# throw-away Debian bookworm VM with systemd 252 as PID 1 on pure cgroup v2. It installs for
# real (/opt, /etc), which is why it never runs on the host itself.
# The VM has no network: the wheels (sandboxd + deps) are built here first, into build/wheels,
# and installed offline in the VM with Debian's python3, as a user would on an offline host;
# so are two builds of the .deb (versions -1 and -2, for the upgrade), into build/deb-test.
# Extra arguments go to pytest. Without the rig this layer is skipped (loudly), except under
# CI=true, where a missing rig fails unless SANDBOXD_SKIP_VM=1.
set -euo pipefail
cd "$(dirname "$0")/.."

rig=../shared/vm/run
wheels=build/wheels
if [[ ! -x $rig ]]; then
    # A clone on its own has no rig: skip loudly. CI has it, so there a missing rig is a failure.
    if [[ ${SANDBOXD_SKIP_VM:-} == 1 || ${CI:-} != true ]]; then
        echo "test-systemd: SKIPPED: no VM rig at $rig; the systemd e2e test runs in CI, which has" \
            "the rig beside the checkout" >&2
        exit 0
    fi
    echo "test-systemd: $rig not found: CI needs the VM rig beside the checkout" \
        "(SANDBOXD_SKIP_VM=1 skips this layer)" >&2
    exit 1
fi
if [[ ! -x .venv/bin/pytest ]]; then
    echo "test-systemd: .venv/bin/pytest missing: run scripts/setup.sh first" >&2
    exit 1
fi

# Always a fresh sandboxd wheel (the checkout as it is now); the dependencies' wheels are
# reused when present, so only the first run needs the network.
built=$SECONDS
mkdir -p "$wheels"
rm -f "$wheels"/sandboxd-*.whl
if ! .venv/bin/pip wheel --quiet --no-index --find-links "$wheels" -w "$wheels" . 2>/dev/null; then
    .venv/bin/pip wheel --quiet -w "$wheels" .
fi

# Two package builds from these wheels: the second is the upgrade of the first.
debs=build/deb-test
rm -rf "$debs"
version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("sandboxd"))')
echo "test-systemd: the wheels took $((SECONDS - built)) s"
# The two builds run side by side: each is mostly one core's work (pip, compileall, xz), each
# has its own work directory and .deb name, and nothing else runs in this layer meanwhile.
built=$SECONDS
names=$(mktemp -d)
trap 'rm -rf "$names"' EXIT
packaging/build-deb.sh --wheels "$wheels" --out "$debs" --version "$version-1" >"$names/1" &
first=$!
packaging/build-deb.sh --wheels "$wheels" --out "$debs" --version "$version-2" >"$names/2" &
second=$!
wait "$first" || { echo "test-systemd: building the $version-1 package failed" >&2 && exit 1; }
wait "$second" || { echo "test-systemd: building the $version-2 package failed" >&2 && exit 1; }
deb1=$(<"$names/1")
deb2=$(<"$names/2")
rm -rf "$names" # the exec below drops the trap
echo "test-systemd: the two .deb builds took $((SECONDS - built)) s"

# The guest is TCG-emulated (~5x slower Python); the rig passes pytest's exit status through
# (125 = the rig itself failed). The image is the v2 VM's (one cached image for both).
# The checkout's bytecode (and pytest's rewritten test modules) written here, not compiled in
# emulation by the VM's pytest (the installed sandboxd is compiled by its own install, as for a
# user).
./scripts/bytecode.sh -m systemd tests/systemd
# shellcheck source=scripts/vm-packages.sh
source scripts/vm-packages.sh
SANDBOXD_SYSTEMD_E2E=1 SANDBOXD_WHEELS="$PWD/$wheels" SANDBOXD_DEBS="$deb1:$deb2" exec \
    "$rig" --systemd --timeout "${VM_TIMEOUT:-1500}" -- \
    .venv/bin/pytest -m systemd -p no:cacheprovider -q -ra -x --durations=0 tests/systemd "$@"
