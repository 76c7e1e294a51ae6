"""The one mountinfo reader: fields found around the ` - ` separator, paths unescaped."""

from __future__ import annotations

from supervisor.linux import mountinfo

TEXT = (
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "30 22 0:26 / /sys/fs/cgroup/memory rw shared:9 master:2 - cgroup cgroup rw,memory\n"
    "31 22 0:40 /etc/ab12 /srv/my\\040disk/etc ro - tmpfs tmpfs ro,size=4k\n"
    "32 22 0:41 / /back\\134slash rw - tmpfs none rw\n"
    "garbage\n"
    "33 22 0:42 / /no-separator rw tmpfs none rw\n"
)


def test_fields_around_the_separator_whatever_the_optional_fields() -> None:
    found = list(mountinfo.parse(TEXT))
    assert [m.point for m in found] == [
        "/",
        "/sys/fs/cgroup/memory",
        "/srv/my disk/etc",
        "/back\\slash",
    ]
    root, memory = found[0], found[1]
    assert (root.device, root.root, root.fstype, root.super_options) == ("259:1", "/", "ext4", "rw")
    assert (memory.fstype, memory.super_options) == ("cgroup", "rw,memory")  # two optional fields


def test_octal_escapes_are_undone_in_paths() -> None:
    snap = list(mountinfo.parse(TEXT))[2]
    assert (snap.root, snap.point) == ("/etc/ab12", "/srv/my disk/etc")
    assert mountinfo.unescape("a\\011b\\012c") == "a\tb\nc"
    assert mountinfo.unescape("plain") == "plain"


def test_this_process_mountinfo_has_its_root() -> None:
    assert any(m.point == "/" for m in mountinfo.parse(mountinfo.read()))
