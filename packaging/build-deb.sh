#!/usr/bin/env bash
# Build a Debian package of sandboxd: a self-contained venv in /opt/sandboxd/venv (on the
# system's python3 3.11), the systemd units, tmpfiles, sysusers, man pages and completions
# (the file list is packaging/layout.sh, shared with install.sh).
#
#   packaging/build-deb.sh [--wheels DIR] [--version VERSION] [--out DIR]
#
# --wheels DIR   install sandboxd and its dependencies from wheels built with
#                `pip wheel -w DIR <checkout>` (offline); default: from the checkout (pip
#                fetches the dependencies)
# --version V    the package version (default: the project's version, revision 1, e.g.
#                0.1.0-1); a bigger one is an upgrade for apt
# --out DIR      where the .deb goes (default build/deb)
# Needs dpkg-deb and /usr/bin/python3 3.11 with venv (the interpreter the package runs on).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
checkout=$(dirname "$here")
# shellcheck source=packaging/layout.sh
source "$here/layout.sh"
python=/usr/bin/python3
wheels=
version=
out=$checkout/build/deb

die() {
    echo "build-deb: $*" >&2
    exit 1
}

while (($#)); do
    case $1 in
    --wheels) wheels=$(cd "${2:?--wheels needs a directory}" && pwd) && shift ;;
    --version) version=${2:?--version needs a version} && shift ;;
    --out) out=${2:?--out needs a directory} && shift ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt install dpkg-dev)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null ||
    die "$python is not Python 3.11 with venv: the package's venv needs the target's python3"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
venv=$root/opt/sandboxd/venv

# 1. The venv, built where it will live, then moved: every path that names the build
#    directory is rewritten to /opt/sandboxd/venv (dh-virtualenv does the same).
"$python" -m venv "$venv"
if [[ -n $wheels ]]; then
    "$venv/bin/pip" install --quiet --no-index --find-links "$wheels" sandboxd
else
    "$venv/bin/pip" install --quiet "$checkout"
fi
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools 2>/dev/null || true
pyversion=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sandboxd"))')
"$venv/bin/python" -m supervisor.docs_gen --readme "$checkout/README.md" "$work/gen" >/dev/null
for f in "$venv"/bin/*; do
    if [[ -f $f && ! -L $f ]] && head -c 2 "$f" | grep -q '#!'; then
        sed -i "1s|^#!$venv/bin/python.*|#!/opt/sandboxd/venv/bin/python3|" "$f"
    fi
done
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
sed -i "s|$venv|/opt/sandboxd/venv|g" "$venv/pyvenv.cfg"
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
# Compiled now, with the installed path in them (tracebacks name the real file), so nothing
# is written under /opt at run time and dpkg owns every file.
"$python" -m compileall -q -s "$root" -p / "$venv/lib" >/dev/null
if grep -rlI --exclude-dir=__pycache__ "$work" "$venv" >/dev/null; then
    die "the venv still names the build directory: $(grep -rlI "$work" "$venv" | head -3)"
fi

# 2. Everything else, as install.sh places it (Debian's paths), and the commands.
layout_install deb "$checkout" "$work/gen" "$root"
mkdir -p "$root/usr/bin"
for tool in sandboxd sandboxctl; do
    ln -s "/opt/sandboxd/venv/bin/$tool" "$root/usr/bin/$tool"
done
install -D -m 0644 "$checkout/etc/sandboxd/sandboxd.toml" "$root/etc/sandboxd/sandboxd.toml"

# 3. The control files.
version=${version:-$pyversion-1}
arch=$(dpkg --print-architecture)
mkdir -p "$root/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
    -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$root" | cut -f1)/" \
    "$here/deb/control" >"$root/DEBIAN/control"
echo /etc/sandboxd/sandboxd.toml >"$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/deb/$script" "$root/DEBIAN/$script"
done
mkdir -p "$out"
deb=$out/sandboxd_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
