"""The daemon config: defaults, the documented example file, overrides, one-line errors."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from supervisor.config import DEFAULT_CONFIG_PATH, DaemonConfig, load_config
from supervisor.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "sandboxd" / "sandboxd.toml"


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "sandboxd.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_defaults_match_the_contract() -> None:
    c = DaemonConfig()
    assert c.units_dir == Path("/etc/sandboxd/units")
    assert c.state_dir == Path("/run/sandboxd")
    assert c.data_dir == Path("/var/lib/sandboxd")
    assert c.log_dir == Path("/var/log/sandboxd")
    assert c.socket_path == Path("/run/sandboxd/control.sock")
    assert c.log_max_size == 10 << 20
    assert c.network.subnet == "10.88.0.0/16"
    assert c.network.subnet6 is None
    assert Path("/etc/sandboxd/sandboxd.toml") == DEFAULT_CONFIG_PATH


def test_the_repo_example_is_the_defaults() -> None:
    # etc/sandboxd/sandboxd.toml documents every key with its default value.
    assert load_config(REPO_CONFIG) == DaemonConfig()
    documented = tomllib.loads(REPO_CONFIG.read_text())
    commented = {
        line.lstrip("# ").split(" =")[0]
        for line in REPO_CONFIG.read_text().splitlines()
        if line.startswith("# ") and " = " in line
    }
    # An optional table, commented out whole (`# [cluster]`).
    commented |= {line[3:-1] for line in REPO_CONFIG.read_text().splitlines() if line[:3] == "# ["}
    assert set(DaemonConfig.model_fields) <= set(documented) | commented


def test_a_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("supervisor.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None) == DaemonConfig()


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent.toml: no such file"):
        load_config(tmp_path / "absent.toml")


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/tmp/a"\nunits_dir = "/tmp/u"\n')
    c = load_config(path, {"state_dir": Path("/tmp/b"), "units_dir": None})
    assert c.state_dir == Path("/tmp/b")
    assert c.units_dir == Path("/tmp/u")
    assert c.socket_path == Path("/tmp/b/control.sock")


@pytest.mark.parametrize(
    ("text", "key", "gist"),  # the gist of the message: its wording may still be polished
    [
        ("unit_dir = '/x'\n", "unit_dir", "unknown key"),
        ("log_keep = 0\n", "log_keep", "greater than or equal to 1"),
        ("log_max_size = 'lots'\n", "log_max_size", "invalid size 'lots'"),
        ("[network]\nsubnet = '10.0.0.0/31'\n", "network.subnet", "'10.0.0.0/31' is too small"),
        ("[network]\nsubnet6 = '10.0.0.0/8'\n", "network.subnet6", "not an IPv6 network"),
        ("[network]\nsubnet6 = 'fd00::1/64'\n", "network.subnet6", "has host bits set"),
        ("[network]\nsubnet6 = 'fd00::/124'\n", "network.subnet6", "up to /120"),
        ("[network]\nsubnet6 = 'fe80::/64'\n", "network.subnet6", "not a unicast range"),
        ("on_exit = 'explode'\n", "on_exit", "'stop' or 'leave'"),
        ("[cluster]\nnode = 'n1'\n", "cluster.endpoints", "Field required"),
        ("[cluster]\nendpoints = []\n", "cluster.endpoints", "at least 1 item"),
        ("[cluster]\nendpoints = ['127.0.0.1:2379']\n", "cluster.endpoints", "http:// or https://"),
        ("[cluster]\nendpoints = ['http://e:2379']\nnode = 'a/b'\n", "cluster.node", "match"),
        ("[cluster]\nendpoints = ['http://e:2379']\nprefix = 'x/'\n", "cluster.prefix", "match"),
        (
            "[cluster]\nendpoints = ['http://e:2379']\nlease_ttl = 1\n",
            "cluster.lease_ttl",
            "greater than or equal to 2",
        ),
        ("[cluster]\nendpoints = ['http://e:2379']\ncert = '/c'\n", "cluster", "go together"),
        ("units_dir = \n", None, "invalid TOML"),
        (b"\xff", None, "invalid TOML"),
    ],
)
def test_errors_are_one_line_naming_file_and_key(
    tmp_path: Path, text: str | bytes, key: str | None, gist: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert str(info.value).startswith(prefix)
    assert gist in str(info.value)
    assert "\n" not in str(info.value)


def test_subnet6_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[network]\nsubnet6 = 'FD00:88:0::/64'\n")
    assert load_config(path).network.subnet6 == "fd00:88::/64"


def test_output_defaults_to_both_where_there_is_a_journal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("supervisor.linux.journal.SOCKET_PATH", "/nonexistent/journal/socket")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert DaemonConfig().output == "file"
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")  # what systemd sets for a service's stderr
    assert DaemonConfig().output == "both"


def test_output_in_the_file_wins_and_a_bad_one_is_named(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'output = "journal"\n')).output == "journal"
    with pytest.raises(ConfigError, match=r"sandboxd.toml: output: .*'file', 'journal' or 'both'"):
        load_config(write(tmp_path, 'output = "syslog"\n'))


def test_cluster_defaults_and_absence(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).cluster is None
    path = write(tmp_path, "[cluster]\nendpoints = ['http://127.0.0.1:2379']\n")
    cluster = load_config(path).cluster
    assert cluster is not None
    assert (cluster.prefix, cluster.lease_ttl, cluster.ca) == ("/sandboxd/v1", 10, None)
    assert cluster.node == socket.gethostname().split(".")[0]
