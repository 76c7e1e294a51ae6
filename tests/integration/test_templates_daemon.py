"""Templates, instances and drop-ins against a real daemon (issue 24): instances of one template
serving on their own ports, a template edit restarting only the instances it changes, a
drop-in lowering memory_max applied live, a broken drop-in keeping the running unit, and
`sandboxctl cat --effective` agreeing with `status UNIT`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest

from tests.support.daemon_kit import Daemon, pid_alive
from tests.support.requires import cgroup_version, requires_root

pytestmark = [pytest.mark.root, requires_root]

# Each instance serves on its own port, inside its own network namespace (mode "none"), and
# the probe (run in that namespace) asks the port the instance's name says.
TEMPLATE = """\
[template]
instances = ["18082"]

[service]
exec = ["/usr/bin/python3", "-m", "http.server", "%i", "--bind", "127.0.0.1"]
workdir = "/usr/share/doc"
stop_signal = "SIGINT"
stop_timeout = "2s"
env = { UNIT = "%n" }

[health]
http = "http://127.0.0.1:%i/"
interval = "200ms"
timeout = "1s"
start_period = "60s"
"""
TICKER = """\
[service]
exec = ["/bin/sh", "-c", "while true; do sleep 0.2; done"]
stop_timeout = "500ms"

[resources]
memory_max = "64M"
pids_max = 64
"""


def sandboxctl(d: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    env.pop("TERM", None)
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def healthy(d: Daemon, name: str) -> dict[str, object]:
    return d.wait_unit(name, lambda u: u["state"] == "running" and u["health"] == "healthy", 60)


def test_instances_of_one_template_serve_on_their_ports(daemon: Daemon) -> None:
    (daemon.units / "web@.toml").write_text(TEMPLATE)
    (daemon.units / "web@18081.toml").write_text("")  # enabled by an empty file...
    (daemon.units / "web@18083.toml").symlink_to("web@.toml")  # ...by a link to the template
    # A drop-in of one instance sets what the template will set later: that instance's
    # expanded spec will not change when the template does.
    (daemon.units / "web@18081.toml.d").mkdir()
    (daemon.units / "web@18081.toml.d" / "pin.toml").write_text("[restart]\nburst = 7\n")
    daemon.start()
    before = {n: healthy(daemon, n) for n in ("web@18081", "web@18082", "web@18083")}
    assert sorted(daemon.status()) == ["web@18081", "web@18082", "web@18083"]  # no "web@"
    for name in before:
        detail = daemon.unit(name)
        assert detail["health_output"].startswith("HTTP/1.0 200 OK"), detail
        assert detail["template"] == str(daemon.units / "web@.toml")
        assert daemon.cgroup_file(name, "pids.max").exists()  # each its own cgroup
    assert daemon.unit("web@18081")["dropins"] == [str(daemon.units / "web@18081.toml.d/pin.toml")]
    shown = sandboxctl(daemon, "status", "web@18081").stdout
    assert f"template:     {daemon.units}/web@.toml" in shown
    assert f"drop-ins:     {daemon.units}/web@18081.toml.d/pin.toml" in shown

    (daemon.units / "web@.toml").write_text(TEMPLATE + "\n[restart]\nburst = 7\n")
    reloaded = sandboxctl(daemon, "reload", "--json")
    assert reloaded.returncode == 0, reloaded
    assert sorted(json.loads(reloaded.stdout)["restarted"]) == ["web@18082", "web@18083"]
    after = {n: healthy(daemon, n) for n in before}
    assert after["web@18081"]["pid"] == before["web@18081"]["pid"]
    for name in ("web@18082", "web@18083"):
        assert after[name]["pid"] != before[name]["pid"]
        assert not pid_alive(int(str(before[name]["pid"])))

    # Dropping an instance from the list stops it; the others run on.
    (daemon.units / "web@.toml").write_text(TEMPLATE.replace('"18082"', ""))
    dropped = sandboxctl(daemon, "reload", "--json")
    assert json.loads(dropped.stdout)["stopped"] == ["web@18082"], dropped

    # A bad name in the list is the template's own mistake: logged, and the rest run on.
    (daemon.units / "web@.toml").write_text(TEMPLATE.replace('"18082"', '"bad name"'))
    assert sandboxctl(daemon, "reload").returncode == 0
    [logged] = daemon.events("unit.template_invalid")
    assert logged["template"] == str(daemon.units / "web@.toml")
    assert "template.instances[0]: 'bad name' is not a valid instance name" in logged["problem"]
    assert sorted(daemon.status()) == ["web@18081", "web@18083"]


def test_a_dropin_applies_live_and_a_broken_one_keeps_the_unit(daemon: Daemon) -> None:
    daemon.write_unit("app", TICKER)
    daemon.start()
    first = daemon.wait_unit("app", lambda u: u["state"] == "running")
    limit = daemon.cgroup_file(
        "app", "memory.max" if cgroup_version() == 2 else "memory.limit_in_bytes"
    )
    assert int(limit.read_text()) == 64 << 20
    dropins = daemon.units / "app.toml.d"
    dropins.mkdir()
    (dropins / "50-mem.toml").write_text('[resources]\nmemory_max = "32M"\n')
    reloaded = sandboxctl(daemon, "reload", "--json")
    assert json.loads(reloaded.stdout)["updated"] == ["app"], reloaded
    assert int(limit.read_text()) == 32 << 20  # applied to the running cgroup
    assert daemon.status()["app"]["pid"] == first["pid"]  # without a restart

    # `cat --effective` says what status says runs.
    cat = sandboxctl(daemon, "cat", "app", "--effective", "--units-dir", str(daemon.units))
    assert cat.returncode == 0, cat
    effective = tomllib.loads(cat.stdout[cat.stdout.index("# effective") :])
    limits = {k: v for k, v in daemon.unit("app")["limits"].items() if v is not None}
    assert effective["resources"] == limits
    assert f"# {dropins}/50-mem.toml\n" in cat.stdout

    (dropins / "60-bad.toml").write_text('[resources]\nmemory_max = "lots"\n')
    broken = sandboxctl(daemon, "reload")
    assert broken.returncode == 1
    assert f"{dropins}/60-bad.toml:2: resources.memory_max: invalid size 'lots'" in broken.stdout
    app = daemon.status()["app"]
    assert app["state"] == "running" and app["pid"] == first["pid"]
    assert app["file_invalid"] and f"{dropins}/60-bad.toml:2" in app["error"]
    assert int(limit.read_text()) == 32 << 20  # the running version is kept


def test_an_instance_is_readopted_with_its_sources_after_a_daemon_kill(daemon: Daemon) -> None:
    (daemon.units / "job@.toml").write_text(TICKER.replace("64M", "48M"))
    (daemon.units / "job@a.toml").write_text("")
    (daemon.units / "job@.toml.d").mkdir()
    (daemon.units / "job@.toml.d" / "p.toml").write_text("[resources]\npids_max = 32\n")
    daemon.start()
    before = daemon.wait_unit("job@a", lambda u: u["state"] == "running")
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    after = daemon.wait_unit("job@a", lambda u: u["state"] == "running")
    assert after["pid"] == before["pid"]  # adopted, not restarted
    assert [e["unit"] for e in daemon.events("unit.adopted")] == ["job@a"]
    detail = daemon.unit("job@a")
    assert detail["template"] == str(daemon.units / "job@.toml")
    assert detail["dropins"] == [str(daemon.units / "job@.toml.d" / "p.toml")]
    assert detail["limits"]["pids_max"] == 32
    # The first reload finds the files unchanged: nothing restarts.
    reloaded = json.loads(sandboxctl(daemon, "reload", "--json").stdout)
    assert reloaded["restarted"] == [] and reloaded["started"] == []
    assert daemon.status()["job@a"]["pid"] == before["pid"]
