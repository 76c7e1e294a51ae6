"""`resolve_in_root`: a path as a process chrooted at the root would see it, never the host's."""

from __future__ import annotations

from pathlib import Path

from supervisor.linux.safefs import resolve_in_root


def test_links_resolve_inside_the_root_and_never_leave_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("")
    (root / "bin").symlink_to("usr/bin")
    (root / "abs").symlink_to("/usr/bin/tool")
    (root / "up").symlink_to("../../../../../../../etc/passwd")
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert resolve_in_root(r, "/bin/tool") == f"{r}/usr/bin/tool"
    assert resolve_in_root(r, "/abs") == f"{r}/usr/bin/tool"
    assert resolve_in_root(r, "/../../bin/./tool") == f"{r}/usr/bin/tool"
    assert resolve_in_root(r, "/up") is None  # the host's /etc/passwd is not the root's
    assert resolve_in_root(r, "/loop") is None
    assert resolve_in_root(r, "/usr/bin/tool/x") is None  # a file in the middle
    assert resolve_in_root(r, "/") == r
