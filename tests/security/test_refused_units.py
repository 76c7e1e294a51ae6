"""Unit files that would weaken the sandbox are refused by `sandboxctl validate` with a
file:line: key error (issue 18, finding 7): a mount over or a bind of the kernel's /proc, /sys
or /dev (which undoes the masked paths and the minimal /dev), and a tmpfs that could fill the
host's memory (64T, "max", 0: the kernel reads size=0 as no limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.main import main
from supervisor.errors import EXIT_FAILURE

REFUSED = {
    "over_proc": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ type = "tmpfs", target = "/proc/sys" }]\n',
        "sandbox.mounts[0].target: target '/proc/sys' is in the kernel's /proc",
    ),
    "over_sys": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ source = "/srv", target = "/sys" }]\n',
        "sandbox.mounts[0].target: target '/sys' is in the kernel's /sys",
    ),
    "host_dev": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ source = "/dev", target = "/hostdev" }]\n',
        "sandbox.mounts[0].source: source '/dev' is in the kernel's /dev "
        "(list devices in sandbox.devices)",
    ),
    "host_proc": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ source = "/proc/1/root", target = "/x", read_only = true }]\n',
        "sandbox.mounts[0].source: source '/proc/1/root' is in the kernel's /proc",
    ),
    "huge_tmpfs": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ type = "tmpfs", target = "/cache", size = "64T" }]\n',
        "sandbox.mounts[0].size: a tmpfs size must be from 4K to 16G, got 64T",
    ),
    "unbounded_tmpfs": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
        'mounts = [{ type = "tmpfs", target = "/cache", size = "max" }]\n',
        "sandbox.mounts[0].size: a tmpfs size must be from 4K to 16G, got max",
    ),
    "zero_tmp": (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\ntmp_size = "0"\n',
        "sandbox.tmp_size: a tmpfs size must be from 4K to 16G, got 0",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_validate_refuses_with_file_and_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = REFUSED[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    assert main(["validate", str(path)]) == EXIT_FAILURE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}:"), line
    assert line.endswith(message), line
