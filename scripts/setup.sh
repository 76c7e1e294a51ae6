#!/usr/bin/env bash
# Idempotent setup for a fresh Debian host (run as root): the kernel-side tools sandboxd and its
# tests use, then a venv in .venv with the package and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(iproute2 nftables busybox-static tini crun runc bubblewrap libseccomp2 procps psmisc curl util-linux
    iputils-ping)
missing=()
for d in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
stamp=.venv/.sandboxd-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
