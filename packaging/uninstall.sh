#!/usr/bin/env bash
# Remove what packaging/install.sh installed. Stops the daemon first, which stops every
# service. Never touches /etc/sandboxd/units (the operator's unit files); keeps
# /etc/sandboxd/sandboxd.toml, /var/lib/sandboxd and /var/log/sandboxd unless --purge.
set -euo pipefail

prefix=/opt/sandboxd
# shellcheck source=packaging/layout.sh
source "$(dirname "$0")/layout.sh"
purge=0
case ${1:-} in
"") ;;
--purge) purge=1 ;;
*)
    echo "usage: uninstall.sh [--purge]" >&2
    exit 2
    ;;
esac
[[ $(id -u) == 0 ]] || {
    echo "uninstall: must run as root" >&2
    exit 1
}

if [[ -d /run/systemd/system ]]; then
    # A real stop: the daemon stops its services, then sandboxd-sandboxes.service goes too.
    systemctl disable --now --quiet sandboxd.service 2>/dev/null || true
    systemctl stop sandboxd-sandboxes.service 2>/dev/null || true
fi
layout_remove local
rm -rf /etc/systemd/system/sandboxd.service.d /etc/systemd/system/sandboxd-sandboxes.service.d
for tool in sandboxd sandboxctl; do
    # Only our own links: never a sandboxd installed some other way.
    if [[ $(readlink "/usr/local/bin/$tool" || true) == "$prefix"/* ]]; then
        rm -f "/usr/local/bin/$tool"
    fi
done
rm -rf "$prefix" /run/sandboxd
if ((purge)); then
    rm -f /etc/sandboxd/sandboxd.toml
    rm -rf /var/lib/sandboxd /var/log/sandboxd
    if getent group sandboxd >/dev/null; then
        groupdel sandboxd
    fi
fi
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl reset-failed sandboxd.service sandboxd-sandboxes.service 2>/dev/null || true
fi
echo "uninstall: done; /etc/sandboxd/units is left as it was" \
    "$( ((purge)) || echo "(config, data and logs kept: --purge removes them)")"
