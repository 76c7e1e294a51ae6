"""Host checks: what cannot work on this host is a warning naming the key, never an error."""

from __future__ import annotations

from pathlib import Path

from supervisor.unit.checks import host_warnings
from supervisor.unit.loader import load_unit


def warnings_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "u.toml"
    path.write_text('[service]\nexec = ["/bin/true"]\n' + text)
    return [str(w) for w in host_warnings(load_unit(path))]


def test_a_device_that_is_not_a_device_node(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/shm" }]\n')
    assert found == [
        f"{tmp_path}/u.toml: sandbox.devices[0].path: warning: /dev/shm is not a device node "
        "on this host (not a character or block device)"
    ]


def test_a_missing_device(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/nope" }]\n')
    assert found == [
        f"{tmp_path}/u.toml: sandbox.devices[0].path: warning: "
        "/dev/nope does not exist on this host"
    ]


def test_a_real_device_passes(tmp_path: Path) -> None:
    assert warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/null" }]\n') == []


def test_cpus_not_online_are_named(tmp_path: Path) -> None:
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()
    found = warnings_for(tmp_path, '[resources]\ncpus = "0,4095"\n')
    assert found == [
        f"{tmp_path}/u.toml: resources.cpus: warning: cpus '0,4095': CPU 4095 not online on "
        f"this host (online: {online})"
    ]
    assert warnings_for(tmp_path, '[resources]\ncpus = "0"\n') == []
