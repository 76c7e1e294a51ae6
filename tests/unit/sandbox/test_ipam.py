"""Address leases: validation of static addresses, allocation, persistence, atomic writes."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from supervisor.errors import NetworkError
from supervisor.sandbox.host.ipam import (
    Lease6Store,
    LeaseStore,
    check_static,
    check_static6,
    gateway6_of,
    gateway_of,
    link_local_for,
)

SUBNET = ipaddress.IPv4Network("10.201.5.0/24")


@pytest.fixture
def store(tmp_path: Path) -> LeaseStore:
    return LeaseStore(tmp_path / "network" / "leases.json", SUBNET)


def test_gateway_is_first_host() -> None:
    assert gateway_of(SUBNET) == ipaddress.IPv4Address("10.201.5.1")
    assert gateway_of(ipaddress.IPv4Network("10.88.0.0/16")) == ipaddress.IPv4Address("10.88.0.1")


def test_check_static_accepts_address_in_subnet() -> None:
    assert check_static("10.201.5.10/24", SUBNET) == ipaddress.IPv4Interface("10.201.5.10/24")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.202.0.10/24", "outside the daemon's subnet 10.201.5.0/24"),
        ("10.201.5.10/16", "has prefix /16 but the daemon's subnet is 10.201.5.0/24"),
        ("10.201.5.0/24", "network or broadcast address"),
        ("10.201.5.255/24", "network or broadcast address"),
        ("10.201.5.1/24", "the bridge's own address"),
        ("not-an-ip/24", "is not an IPv4 address"),
    ],
)
def test_check_static_rejects(address: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        check_static(address, SUBNET)


def test_allocation_skips_gateway_and_is_stable(store: LeaseStore) -> None:
    a = store.acquire("a")
    b = store.acquire("b")
    assert (str(a), str(b)) == ("10.201.5.2", "10.201.5.3")
    assert store.acquire("a") == a  # a restart keeps the address
    # A daemon restart: a new store on the same file knows the leases.
    again = LeaseStore(store.path, SUBNET)
    assert again.acquire("b") == b
    assert str(again.acquire("c")) == "10.201.5.4"


def test_released_address_is_reused(store: LeaseStore) -> None:
    store.acquire("a")
    store.acquire("b")
    assert store.release("a") is True
    assert store.release("a") is False
    assert str(store.acquire("c")) == "10.201.5.2"
    assert set(store.leases()) == {"b", "c"}


def test_static_address_taken_by_another_unit(store: LeaseStore) -> None:
    dynamic = store.acquire("a")
    before = store.path.read_bytes()
    with pytest.raises(NetworkError, match=f"address {dynamic} is already leased to unit 'a'"):
        store.acquire("b", ipaddress.IPv4Interface(f"{dynamic}/24"))
    assert store.path.read_bytes() == before  # nothing written on error


def test_static_address_change_replaces_lease(store: LeaseStore) -> None:
    store.acquire("a", ipaddress.IPv4Interface("10.201.5.50/24"))
    store.acquire("a", ipaddress.IPv4Interface("10.201.5.60/24"))
    assert store.leases() == {"a": ipaddress.IPv4Address("10.201.5.60")}
    # A dynamic unit never lands on a static lease.
    assert str(store.acquire("b")) == "10.201.5.2"


def test_no_duplicates_under_many_units(store: LeaseStore) -> None:
    small = LeaseStore(store.path, ipaddress.IPv4Network("10.201.5.0/29"))
    got = [small.acquire(f"u{i}") for i in range(5)]  # .2 .. .6 (.1 is the gateway)
    assert len(set(got)) == 5
    with pytest.raises(NetworkError, match=r"no free address left in 10\.201\.5\.0/29"):
        small.acquire("one-too-many")


def test_retain_releases_removed_units(store: LeaseStore) -> None:
    for unit in ("a", "b", "c"):
        store.acquire(unit)
    assert store.retain({"b"}) == ["a", "c"]
    assert list(store.leases()) == ["b"]
    assert store.retain({"b"}) == []


def test_file_format_and_atomic_write(store: LeaseStore) -> None:
    store.acquire("web")
    data = json.loads(store.path.read_text())
    assert data == {"version": 1, "subnet": "10.201.5.0/24", "leases": {"web": "10.201.5.2"}}
    # Only the final file is left: the temporary one was renamed over it.
    assert os.listdir(store.path.parent) == ["leases.json"]


def test_corrupt_file_fails_closed(store: LeaseStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(NetworkError, match="is corrupt"):
        store.acquire("a")
    store.path.write_text(json.dumps({"version": 9, "leases": {}}))
    with pytest.raises(NetworkError, match="unsupported version 9"):
        store.acquire("a")


def test_leases_outside_a_changed_subnet_are_dropped(store: LeaseStore) -> None:
    store.acquire("a")
    moved = LeaseStore(store.path, ipaddress.IPv4Network("10.201.6.0/24"))
    assert moved.leases() == {}
    assert str(moved.acquire("a")) == "10.201.6.2"


def test_unreadable_and_unwritable_files_are_network_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "network"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(NetworkError, match=r"cannot read leases .*: Not a directory"):
        LeaseStore(blocker / "leases.json", SUBNET).acquire("a")
    # The temporary file's name is taken by a directory: the write fails, the old file stays.
    directory = tmp_path / "data"
    store = LeaseStore(directory / "leases.json", SUBNET)
    store.acquire("a")
    (directory / ".leases.json.tmp").mkdir()
    with pytest.raises(NetworkError, match=r"cannot write leases .*: Is a directory"):
        store.acquire("b")
    assert list(store.leases()) == ["a"]


# -- IPv6 (daemon subnet6) ---------------------------------------------------------------------

SUBNET6 = ipaddress.IPv6Network("fd00:88::/64")


def test_gateway6_and_link_local() -> None:
    assert gateway6_of(SUBNET6) == ipaddress.IPv6Address("fd00:88::1")
    # Modified EUI-64 of the MAC the lease 10.88.0.2 gives (02:5b:0a:58:00:02): the U/L bit
    # flipped back, ff:fe in the middle (what the kernel derives, see test_network_ipv6.py).
    assert str(link_local_for("02:5b:0a:58:00:02")) == "fe80::5b:aff:fe58:2"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("fd00:89::10/64", "outside the daemon's subnet6 fd00:88::/64"),
        ("fd00:88::10/48", "has prefix /48 but the daemon's subnet6 is fd00:88::/64"),
        ("fd00:88::/64", "subnet-router anycast"),
        ("fd00:88::1/64", "the bridge's own address"),
        ("10.0.0.1/8", "is not an IPv6 address"),
    ],
)
def test_check_static6_rejects(address: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        check_static6(address, SUBNET6)


def test_ipv6_leases_are_allocated_pinned_and_kept_like_ipv4(tmp_path: Path) -> None:
    path = tmp_path / "network" / "leases6.json"
    store = Lease6Store(path, SUBNET6)
    assert str(store.acquire("a")) == "fd00:88::2"
    pinned = check_static6("fd00:88::42/64", SUBNET6)
    assert str(store.acquire("b", pinned)) == "fd00:88::42"
    assert str(store.acquire("c")) == "fd00:88::3"
    with pytest.raises(NetworkError, match="already leased to unit 'b'"):
        store.acquire("d", pinned)
    again = Lease6Store(path, SUBNET6)  # a daemon restart
    assert {u: str(ip) for u, ip in again.leases().items()} == {
        "a": "fd00:88::2", "b": "fd00:88::42", "c": "fd00:88::3"}  # fmt: skip
    assert again.retain(["b"]) == ["a", "c"]
    assert json.loads(path.read_text())["subnet"] == "fd00:88::/64"
    # After the operator moves subnet6, old leases are forgotten, never configured.
    assert Lease6Store(path, ipaddress.IPv6Network("fd00:99::/64")).leases() == {}


def test_a_small_ipv6_subnet_runs_out_cleanly(tmp_path: Path) -> None:
    store = Lease6Store(tmp_path / "l6.json", ipaddress.IPv6Network("fd00:88::/126"))
    assert [str(store.acquire(u)) for u in "ab"] == ["fd00:88::2", "fd00:88::3"]
    with pytest.raises(NetworkError, match="no free address left"):
        store.acquire("c")
