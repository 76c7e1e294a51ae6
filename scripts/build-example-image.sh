#!/usr/bin/env bash
# Build a small OCI image from Debian's busybox-static with umoci, without any network:
#   scripts/build-example-image.sh [LAYOUT_DIR] [TAG]    (default /var/lib/images/busybox, tag latest)
# Two layers, like a real image built on a base: the first holds busybox, its applet links, an
# /etc/passwd and a file /etc/doomed; the second deletes /etc/doomed (a whiteout) and adds
# /etc/motd. The config sets Entrypoint, Cmd, Env, WorkingDir, User, StopSignal and
# ExposedPorts, so units/image.toml shows how an image's config becomes a unit's defaults.
# Nothing is rebuilt when the tag is already there (remove the directory to rebuild).
set -euo pipefail
layout=${1:-/var/lib/images/busybox}
tag=${2:-latest}
busybox=/bin/busybox
for tool in umoci "$busybox"; do
    command -v "$tool" >/dev/null || { echo "build-example-image: $tool missing (apt-get install umoci busybox-static)" >&2; exit 1; }
done
if [[ -f $layout/index.json ]] && grep -q "\"org.opencontainers.image.ref.name\":\"$tag\"" "$layout/index.json"; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$layout")"
[[ -f $layout/index.json ]] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"

umoci unpack --image "$layout:$tag" "$work/b1" >/dev/null
r=$work/b1/rootfs
mkdir -p "$r/bin" "$r/etc" "$r/srv" "$r/home/app"
cp "$busybox" "$r/bin/busybox"
for applet in sh ls cat echo sleep id touch rm mkdir stat httpd env pwd wget grep ps hostname; do ln -sf busybox "$r/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$r/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$r/etc/group"
echo "deleted in the second layer" >"$r/etc/doomed"
echo "<h1>hello from an image</h1>" >"$r/srv/index.html"
chown 1000:1000 "$r/home/app"
umoci repack --image "$layout:$tag" "$work/b1" >/dev/null

umoci unpack --image "$layout:$tag" "$work/b2" >/dev/null
rm "$work/b2/rootfs/etc/doomed"
echo "built by scripts/build-example-image.sh" >"$work/b2/rootfs/etc/motd"
umoci repack --image "$layout:$tag" "$work/b2" >/dev/null

umoci config --image "$layout:$tag" \
    --config.entrypoint /bin/httpd --config.cmd -f --config.cmd -p --config.cmd 8080 \
    --config.cmd -h --config.cmd /srv \
    --config.env GREETING=hello --config.env PATH=/bin \
    --config.workingdir /home/app --config.user app --config.stopsignal SIGTERM \
    --config.exposedports 8080/tcp >/dev/null
umoci gc --layout "$layout"
