"""Resolve `user`/`group` against the sandbox's own /etc/passwd and /etc/group (pure parsing).

Parsed by hand rather than through pwd/grp: those go through glibc NSS, which may dlopen
modules from the *host* (the daemon's libc) inside the forked child, and a rootfs directory's
/etc is what names mean in there. The caller reads the files after pivot_root.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownPrincipal(LookupError):
    """A user or group name the sandbox's /etc files do not define."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: list[int]  # supplementary groups, the primary gid included
    home: str
    name: str


def _rows(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= width:
            rows.append(fields)
    return rows


def resolve(user: str, group: str | None, passwd: str, group_file: str) -> Identity:
    """Numeric ids need no entry (uid N without one gets gid 0 and home /, like Docker)."""
    users = _rows(passwd, 7)
    groups = _rows(group_file, 4)
    entry = next(
        (u for u in users if (u[2] == user if user.isdigit() else u[0] == user)),
        None,
    )
    if entry is None and user == "root":
        # A minimal rootfs may have no /etc/passwd at all; root is uid 0 everywhere (Docker).
        entry = ["root", "x", "0", "0", "root", "/root", "/bin/sh"]
    if entry is None and not user.isdigit():
        raise UnknownPrincipal(f"unknown user {user!r}: not in the sandbox's /etc/passwd")
    uid = int(user) if user.isdigit() else int(entry[2])  # type: ignore[index]
    name = entry[0] if entry else user
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and entry[5] else "/"
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            match = next((g for g in groups if g[0] == group), None)
            if match is None:
                raise UnknownPrincipal(f"unknown group {group!r}: not in the sandbox's /etc/group")
            gid = int(match[2])
    extra = [int(g[2]) for g in groups if entry and name in g[3].split(",") and g[2].isdigit()]
    return Identity(uid, gid, sorted({gid, *extra}), home, name)
