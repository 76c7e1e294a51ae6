#!/usr/bin/env bash
# Install sandboxd as a systemd service (or upgrade it in place: run again, then
# `systemctl restart sandboxd`; the services keep running).
#
#   packaging/install.sh                  from this checkout (pip needs the network)
#   packaging/install.sh --wheels DIR     offline, from wheels built elsewhere with
#                                         `pip wheel -w DIR <checkout>` (sandboxd + deps)
# Options: --python PY (default python3, >= 3.11), --no-enable (do not `systemctl enable`).
#
# Layout:
#   /opt/sandboxd/releases/<stamp>/   one venv per install; the previous one is kept, because
#   /opt/sandboxd/venv -> releases/…  the running daemon still uses it until it is restarted
#   /opt/sandboxd/libexec/            sandboxd-stop, sandboxd-holder (helpers of the units)
#   /usr/local/bin/{sandboxd,sandboxctl} -> /opt/sandboxd/venv/bin/…
#   /etc/systemd/system/sandboxd.service, sandboxd-sandboxes.service
#   /usr/lib/tmpfiles.d/sandboxd.conf, /usr/lib/sysusers.d/sandboxd.conf
#   /usr/local/share/man/man{1,5,8}/, /usr/local/share/bash-completion/completions/,
#   /usr/local/share/zsh/site-functions/   man pages and completions, generated from the release
#   (the whole list: packaging/layout.sh, shared with uninstall.sh and build-deb.sh)
#   /etc/sandboxd/sandboxd.toml       only if absent (an existing config is never overwritten):
#                                     the documented defaults, etc/sandboxd/sandboxd.toml
set -euo pipefail

prefix=/opt/sandboxd
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(dirname "$here")
# shellcheck source=packaging/layout.sh
source "$here/layout.sh"
python=python3
wheels=
enable=1

die() {
    echo "install: $*" >&2
    exit 1
}

while (($#)); do
    case $1 in
    --wheels) wheels=$(cd "${2:?--wheels needs a directory}" && pwd) && shift ;;
    --python) python=${2:?--python needs an interpreter} && shift ;;
    --no-enable) enable=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

[[ $(id -u) == 0 ]] || die "must run as root"
[[ -d /run/systemd/system ]] || die "systemd is not running here (no /run/systemd/system)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$python is not Python >= 3.11 with the venv module (Debian: apt install python3-venv)"
if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "install: warning: this host is not pure cgroup v2; see README 'Troubleshooting'" >&2
fi

# 1. A fresh venv for this release; switch the link only once it is complete.
stamp=$(date -u +%Y%m%dT%H%M%S)-$$
release=$prefix/releases/$stamp
mkdir -p "$prefix/releases" "$prefix/libexec"
"$python" -m venv "$release"
if [[ -n $wheels ]]; then
    "$release/bin/pip" install --quiet --no-index --find-links "$wheels" sandboxd
else
    [[ -f $checkout/pyproject.toml ]] || die "no checkout at $checkout: use --wheels DIR"
    "$release/bin/pip" install --quiet "$checkout"
fi
"$release/bin/sandboxd" --help >/dev/null || die "the new release does not run: $release"
# Man pages and completions from this release's own parsers (and the checkout's README).
"$release/bin/python" -m supervisor.docs_gen --readme "$checkout/README.md" "$release/gen" \
    >/dev/null || die "could not generate the man pages and completions"
ln -sfn "releases/$stamp" "$prefix/venv.new"
mv -T "$prefix/venv.new" "$prefix/venv"

# 2. Keep this release, the one before it and the one the daemon runs from (until it is
#    restarted it keeps importing from there); drop older ones. The daemon's argv[0] is the
#    interpreter of its release (the script's shebang names the release, not the link).
running=
if pid=$(systemctl show -p MainPID --value sandboxd.service 2>/dev/null) && ((pid > 0)); then
    running=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
    running=${running%/bin/*}
fi
mapfile -t old < <(find "$prefix/releases" -mindepth 1 -maxdepth 1 -type d | sort | head -n -2)
for dir in "${old[@]}"; do
    [[ $dir == "$running" ]] || rm -rf "$dir"
done

# 3. Files of the systemd integration.
layout_install local "$checkout" "$release/gen" ""
for tool in sandboxd sandboxctl; do
    ln -sfn "$prefix/venv/bin/$tool" "/usr/local/bin/$tool"
done
systemd-sysusers /usr/lib/sysusers.d/sandboxd.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/sandboxd.conf
if [[ ! -e /etc/sandboxd/sandboxd.toml ]]; then
    install -m 0644 "$checkout/etc/sandboxd/sandboxd.toml" /etc/sandboxd/sandboxd.toml
fi
systemctl daemon-reload
if ((enable)); then
    systemctl enable --quiet sandboxd.service
fi

echo "install: sandboxd $("$prefix/venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("sandboxd"))') in $release"
if systemctl is-active --quiet sandboxd.service; then
    echo "install: upgrade: run 'systemctl restart sandboxd' (services keep running)"
else
    echo "install: start it with 'systemctl start sandboxd'; units go in /etc/sandboxd/units"
fi
