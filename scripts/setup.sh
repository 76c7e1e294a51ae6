#!/usr/bin/env bash
# Idempotent setup for a fresh Debian host (run as root): the kernel-side tools sandboxd and its
# tests use, then a venv in .venv with the package and its dev tools.
#
# One line per step it takes, nothing when there is nothing to do. A step's own output (apt,
# debconf, pip, setuptools) is kept out of the way and shown only when that step fails, so a
# failure still says why. Once it has done something it says what to run next; scripts that
# call it first (run.sh, test.sh) pass --no-next, because they are what runs next.
set -euo pipefail
cd "$(dirname "$0")/.."

next=1
case ${1:-} in
"") ;;
--no-next) next=0 ;;
*)
    echo "usage: scripts/setup.sh [--no-next]" >&2
    exit 2
    ;;
esac

did=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# step MESSAGE CMD...: say what is being done, run CMD with its output captured; on failure,
# show that output and stop.
step() {
    local message=$1 rc=0
    shift
    echo "setup: $message"
    did=1
    "$@" >"$out" 2>&1 || rc=$?
    if ((rc)); then
        cat "$out" >&2
        echo "setup: failed ($message): exit status $rc; its output is above" >&2
        exit "$rc"
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
}

# groff-base and zsh: the tests render the generated man pages and load the zsh completion.
# fuse3 (fusermount3, libfuse3): the stalled log disk test's FUSE filesystem (mfusepy).
# umoci and skopeo: the example image (units/image.toml) and the image tests are built with them.
# prometheus for its promtool, which checks that /metrics is valid exposition text.
# etcd-server and etcd-client: the fleet tests run a real 3-member etcd cluster on loopback
# (tests/support/etcd_cluster.py); on a systemd host the package also enables its own etcd on
# 2379, which the tests never use (they pick free ports).
debs=(iproute2 nftables busybox-static tini crun runc bubblewrap libseccomp2 procps psmisc curl util-linux
    iputils-ping groff-base zsh fuse3 umoci skopeo prometheus etcd-server etcd-client)
missing=()
for d in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}" apt_install "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv" python3 -m venv .venv
fi
stamp=.venv/.sandboxd-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    step "upgrading pip in .venv" .venv/bin/pip install --upgrade pip
    # compat: a plain path entry in a .pth file. The default (a meta-path finder module
    # imported by site at every interpreter start) costs ~20 ms per process, which every
    # sandboxctl run and every test's subprocess would pay.
    step "installing sandboxd and its dev tools into .venv (editable)" \
        .venv/bin/pip install -e '.[dev]' --config-settings editable_mode=compat
    touch "$stamp"
fi

# setuptools' distutils-precedence.pth imports _distutils_hack at every interpreter start (~0.5
# ms of each sandboxctl, daemon and test process, issue 23). Nothing in .venv uses setuptools:
# pip builds the package in an isolated environment, and the venv's own (ensurepip's) is too
# old for pyproject.toml anyway. The .deb's venv has none either (packaging/build-deb.sh).
if compgen -G ".venv/lib/python3*/site-packages/distutils-precedence.pth" >/dev/null; then
    step "removing setuptools from .venv (its .pth runs at every interpreter start)" \
        .venv/bin/pip uninstall --yes setuptools
fi

# The image units/image.toml runs, built from busybox-static without any network.
example_image=/var/lib/images/busybox
if [[ ! -f $example_image/index.json ]]; then
    step "building the example image $example_image:latest (scripts/build-example-image.sh)" \
        scripts/build-example-image.sh "$example_image" latest
fi

if ((did && next)); then
    echo "setup: done. Next: scripts/run.sh (the daemon on units/), scripts/test.sh (every test" \
        "layer), or .venv/bin/sandboxctl --help"
fi
