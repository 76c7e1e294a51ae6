"""The etcd key layout under a prefix (default /sandboxd/v1), declared once.

PREFIX/nodes/<node>/units/<unit>   a unit file's TOML text, for one node
PREFIX/all/units/<unit>            the same, for every node (a node key of the name wins)
PREFIX/status/<node>/<unit>        that node's `status --json` of the unit (leased)
PREFIX/nodes/<node>/alive          the node's heartbeat (the same lease)
"""

from __future__ import annotations

import re

DEFAULT_PREFIX = "/sandboxd/v1"
# A value larger than a unit file may be is refused, as a file is (unit/files.py).
MAX_VALUE = 1 << 20
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def normalized(prefix: str) -> str:
    return "/" + prefix.strip("/")


def node_units(prefix: str, node: str) -> str:
    return f"{normalized(prefix)}/nodes/{node}/units/"


def all_units(prefix: str) -> str:
    return f"{normalized(prefix)}/all/units/"


def status_dir(prefix: str, node: str | None = None) -> str:
    return f"{normalized(prefix)}/status/" + (f"{node}/" if node else "")


def status_key(prefix: str, node: str, unit: str) -> str:
    return status_dir(prefix, node) + unit


def alive_key(prefix: str, node: str) -> str:
    return f"{normalized(prefix)}/nodes/{node}/alive"


def prefix_end(key: str) -> str:
    """The range end that selects every key starting with `key` (etcd's --prefix)."""
    raw = key.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


def watched(prefix: str) -> tuple[str, str]:
    """The one range the node agent watches: from all/units/ to the end of nodes/, which
    holds both unit dirs of every node and leaves out status/, written on every change of any
    unit of any node (other nodes' keys are ignored as they pass)."""
    return all_units(prefix), prefix_end(f"{normalized(prefix)}/nodes/")


def unit_of(key: str, prefix: str, node: str) -> tuple[str, bool] | None:
    """(unit name, whether it is this node's own key) for a desired-state key of this node,
    None for any other key."""
    for base, own in ((node_units(prefix, node), True), (all_units(prefix), False)):
        if key.startswith(base):
            name = key[len(base) :]
            return (name, own) if name and "/" not in name else None
    return None
