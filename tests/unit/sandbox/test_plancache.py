"""The root plan cache: planned once per unit revision and host state, and planned again (with
the same errors) as soon as either changes. Probes real temporary paths (no root needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from supervisor.sandbox.host import hostlayout, plancache, rootplan
from supervisor.sandbox.host.plancache import Prepare, RootPlanCache
from supervisor.sandbox.host.settledprobe import SettledProbe
from supervisor.sandbox.wire.mounts import Bind, RootSpec, UnitMount, WriteFile
from supervisor.sandbox.wire.protocol import StageFailure


def spec_binding(source: Path, **changes: object) -> RootSpec:
    base = RootSpec(root="host", hostname="web", mounts=(UnitMount("/data", str(source), True),))
    return dataclasses.replace(base, **changes)


def probed_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the probe reads as the host's /etc, with a passwd in it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    real = hostlayout._probe

    def probe(path: str, copy: bool = False) -> hostlayout.HostPath | None:
        return real(str(etc / path[5:]) if path.startswith("/etc/") else path, copy)

    monkeypatch.setattr(hostlayout, "_probe", probe)
    # Nothing kept between probes (settledprobe.py watches the real /etc): every path is
    # looked at through `probe` at each call.
    monkeypatch.setattr(hostlayout, "_SETTLED", SettledProbe({}, "", probe))
    return etc


def test_an_unchanged_unit_on_an_unchanged_host_reuses_its_plan(tmp_path: Path) -> None:
    cache = RootPlanCache()
    spec = spec_binding(tmp_path)
    first = cache.plan(spec)
    assert cache.plan(spec) is first
    assert (cache.hits, cache.misses) == (1, 1)
    # The same answer planning afresh gives.
    host = hostlayout.HostLayout.probe(rootplan.bind_sources(spec))
    assert first.ops == tuple(rootplan.plan_root(spec, host))


def test_a_changed_unit_is_planned_again(tmp_path: Path) -> None:
    cache = RootPlanCache()
    first = cache.plan(spec_binding(tmp_path))
    writable = cache.plan(spec_binding(tmp_path, tmp_size=1 << 20))
    assert writable is not first and writable.ops != first.ops
    assert cache.misses == 2


def test_a_bind_source_gone_since_the_last_launch_fails_as_it_always_did(tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    cache = RootPlanCache()
    spec = spec_binding(source)
    cache.plan(spec)
    source.rmdir()
    with pytest.raises(StageFailure, match=f"bind source {source} does not exist"):
        cache.plan(spec)
    source.write_text("now a file")  # a file where a directory was: planned as a file bind
    binds = [op for op in cache.plan(spec).ops if isinstance(op, Bind) and op.source == str(source)]
    assert [b.is_dir for b in binds] == [False]


def test_a_changed_etc_file_is_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = probed_etc(tmp_path, monkeypatch)
    cache = RootPlanCache()
    spec = spec_binding(tmp_path)
    first = cache.plan(spec)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    second = cache.plan(spec)
    assert second is not first
    copies = [op.data for op in second.ops if isinstance(op, WriteFile)]
    assert any(b"app:x:1000" in data for data in copies)


def test_the_cache_keeps_only_its_most_recent_units(tmp_path: Path) -> None:
    cache = RootPlanCache(max_entries=2)
    specs = [spec_binding(tmp_path, hostname=f"u{n}") for n in range(3)]
    for spec in specs:
        cache.plan(spec)
    cache.plan(specs[2])
    cache.plan(specs[0])  # dropped: planned again
    assert (cache.hits, cache.misses) == (1, 4)


def test_a_root_directory_probes_no_host_system_tree_nor_etc(tmp_path: Path) -> None:
    # Only a host root shows the host's /usr, /lib... and a copy of its /etc; a root directory
    # or an image has its own, so the launch does not stat them.
    own = hostlayout.HostLayout.probe([str(tmp_path)], host_root=False)
    host = hostlayout.HostLayout.probe([str(tmp_path)])
    assert own.get("/usr") is None and own.get("/etc/passwd") is None
    assert host.get("/usr") is not None and host.get("/etc/passwd") is not None
    assert own.get(str(tmp_path)) == host.get(str(tmp_path))
    assert own.get("/dev/null") == host.get("/dev/null")
    # And the directory root's plan is the same either way.
    spec = RootSpec(root=str(tmp_path), hostname="web", read_only=False, overlay_dir="/ov")
    assert RootPlanCache().plan(spec).ops == tuple(rootplan.plan_root(spec, host))


def test_what_prepare_completes_from_the_probe_keys_the_plan(tmp_path: Path) -> None:
    # launch.py completes a host root's spec with its /etc snapshot, named by the content's
    # digest: a new content (another snapshot) must plan again, the same one must reuse.
    cache = RootPlanCache()
    spec = spec_binding(tmp_path)
    seen: list[RootSpec] = []

    def completed(hostname: str) -> Prepare:
        def prepare(
            s: RootSpec, host: hostlayout.HostLayout
        ) -> tuple[RootSpec, hostlayout.HostLayout]:
            seen.append(s)
            return dataclasses.replace(s, hostname=hostname), host

        return prepare

    first = cache.plan(spec, prepare=completed("a"))
    assert cache.plan(spec, prepare=completed("a")) is first
    other = cache.plan(spec, prepare=completed("b"))
    assert other is not first and (cache.hits, cache.misses) == (1, 2)
    assert seen == [spec, spec, spec]  # given the spec as the unit made it, every launch


@pytest.mark.parametrize("userns", [False, True], ids=["plain", "userns"])
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"read_only": False, "overlay_dir": "/ov"},
        {"etc_snapshot": "SNAPSHOT"},
        {"read_only": False},
        {"root": "ROOT", "read_only": False, "overlay_dir": "/ov"},
    ],
    ids=["host-ro", "host-overlay", "host-snapshot", "host-rw", "directory"],
)
def test_a_unit_differing_by_its_hostname_gets_the_plan_made_for_it(
    tmp_path: Path, changes: dict[str, object], userns: bool
) -> None:
    """Another hostname's plan, renamed, is exactly the plan made afresh for this one: in a
    storm of units from one template each root is planned once, not once per unit."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    fill = {"SNAPSHOT": str(snapshot), "ROOT": str(tmp_path)}
    changes = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    snapshot_of = changes.pop("etc_snapshot", None)

    def prepare(s: RootSpec, host: hostlayout.HostLayout) -> tuple[RootSpec, hostlayout.HostLayout]:
        if snapshot_of is None:  # as launch.py completes a read-only host root's spec
            return s, host
        return dataclasses.replace(s, etc_snapshot=snapshot_of), host.with_paths([snapshot_of])

    def plan(cache: RootPlanCache, name: str) -> plancache.RootPlan:
        spec = spec_binding(tmp_path, hostname=name, userns=userns, **changes)
        return cache.plan(spec, prepare=prepare)

    cache = RootPlanCache()
    plans = {name: plan(cache, name) for name in ("web-1", "web-2", "web-1x")}
    assert (cache.misses, cache.renamed) == (3, 2)
    for name, made in plans.items():
        assert made == plan(RootPlanCache(), name), name
    if changes.get("root", "host") == "host":  # a host root writes its own hostname and hosts
        assert plans["web-1"].ops != plans["web-2"].ops


def test_a_hostname_alike_file_elsewhere_is_not_renamed() -> None:
    """Only the plan's own /etc/hostname and /etc/hosts are swapped, never a file elsewhere
    that happens to hold the same bytes."""
    other = WriteFile("/srv/x/hostname", b"web-1\n")
    plan = plancache.RootPlan((other, WriteFile("/m/etc/hostname", b"web-1\n")), "", ())
    ops = plancache._renamed(plancache._segmented(plan, "web-1"), "web-1", "web-2").ops
    assert ops == (other, WriteFile("/m/etc/hostname", b"web-2\n"))


def test_the_skeleton_is_shared_across_hostnames_and_made_again_on_a_changed_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = probed_etc(tmp_path, monkeypatch)
    cache = RootPlanCache()
    web, api = spec_binding(tmp_path), spec_binding(tmp_path, hostname="api")
    host = hostlayout.HostLayout.probe(rootplan.bind_sources(web))
    first = cache.skeleton(web, host)
    # Another unit made from the same template, probed again on an unchanged host: the very
    # skeleton, which is what planning it afresh gives.
    again = hostlayout.HostLayout.probe(rootplan.bind_sources(api))
    assert cache.skeleton(api, again) is first
    assert first == rootplan.root_skeleton_entries(api, again)
    # An edited /etc file is a changed host: the skeleton holds the new content.
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    edited = hostlayout.HostLayout.probe(rootplan.bind_sources(api))
    second = cache.skeleton(api, edited)
    assert second == rootplan.root_skeleton_entries(api, edited)
    assert ("etc/passwd", "file", (etc / "passwd").read_bytes()) in second
    # A unit differing otherwise (another [[mount]]) has a skeleton of its own.
    (tmp_path / "more").mkdir()
    other = dataclasses.replace(
        web, mounts=(*web.mounts, UnitMount("/srv/more", str(tmp_path / "more"), True))
    )
    probed = hostlayout.HostLayout.probe(rootplan.bind_sources(other))
    assert ("srv/more", "dir", b"") in cache.skeleton(other, probed)


def test_plans_made_on_an_unchanged_host_share_one_probed_layout(tmp_path: Path) -> None:
    # Each probe is dozens of small objects: 128 entries holding one each was ~1.4 MB of the
    # daemon's heap. Equal probes are one object; a changed host is a new one.
    cache = RootPlanCache()
    for n in range(3):
        cache.plan(spec_binding(tmp_path, hostname=f"u{n}"))
    entries = list(cache._entries.values())
    assert all(e.probed is entries[0].probed and e.layout is entries[0].layout for e in entries)
    source = tmp_path / "data"
    source.mkdir()
    other = spec_binding(source, hostname="u3")  # another bind source: another probe
    cache.plan(other)
    assert cache._entries[other].probed is not entries[0].probed
    assert cache._entries[other].probed.get(str(source)) is not None
