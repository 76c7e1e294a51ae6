"""The layers import one way, and the engine decides while the ports act (docs/architecture.md).

Read from the source with `ast`, so a new import that breaks a rule fails here, with the file
and line, before anyone has to notice it in review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor"

# What each layer may not import (its own package and the shared bottom — errors, log,
# config — are always fine). A layer below never reaches up.
UP = ("supervisor.api", "supervisor.cli", "supervisor.daemon")
LOOP = ("asyncio", "structlog", "supervisor.log", "supervisor.config")
FORBIDDEN = {
    "linux": ("supervisor.cgroups", "supervisor.sandbox", "supervisor.engine", "supervisor.unit",
              *UP),
    # Images are read by unit/ (defaults), unpacked by a helper the sandbox side runs.
    "images": ("supervisor.cgroups", "supervisor.sandbox", "supervisor.engine",
               "supervisor.unit", *UP, *LOOP),
    "cgroups": ("supervisor.sandbox", "supervisor.engine", "supervisor.unit", *UP),
    # unit/checks.py asks the cgroup and linux helpers whether a host can run a unit.
    "unit": ("supervisor.sandbox", "supervisor.engine", *UP),
    "sandbox": ("supervisor.engine", *UP),
    # The engine reaches the sandbox only through its ports (engine/ports.py), wired up in
    # daemon.py; the cgroups only through their interface (no backend, no file helpers); the
    # kernel only through linux/ modules, never with raw syscalls.
    "engine": ("supervisor.sandbox", "supervisor.cgroups.", "supervisor.linux.syscalls",
               "ctypes", "fcntl", *UP),
    "api": ("supervisor.sandbox", "supervisor.cgroups", "supervisor.cli", "supervisor.daemon"),
    # Inside sandbox/, by the process a line runs in (sandbox/__init__.py): what crosses
    # processes (wire) and what runs after a fork (child) or in the small fork server never
    # reach into the daemon's side, its event loop or its logging (a forked child that takes
    # a lock another thread held hangs forever).
    "sandbox/wire": ("supervisor.sandbox.host", "supervisor.sandbox.server", *LOOP),
    "sandbox/server": ("supervisor.sandbox.host", *LOOP),
    "sandbox/child": ("supervisor.sandbox.host", "supervisor.sandbox.server", *LOOP),
    # `sandboxctl exec` enters a sandbox itself (sandbox/child/enter.py), as nsenter would.
    # The fleet's etcd side: the daemon wires it to the reconciler; `sandboxctl fleet` uses it.
    "cluster": ("supervisor.sandbox", "supervisor.cgroups", "supervisor.engine", *UP),
    "cli": ("supervisor.engine", "supervisor.cgroups", "supervisor.api", "supervisor.daemon"),
}  # fmt: skip
# A file name of the cgroup filesystem (cgroup.procs, memory.events, freezer.state, ...):
# which file holds what differs between v1 and v2, and only cgroups/ may know.
CGROUP_FILE = re.compile(
    r"\b(cgroup|memory|pids|cpu|cpuacct|cpuset|freezer|io|blkio|devices)\.[a-z_]+\b"
)


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name`
            # only the module.
            found += [(node.lineno, _module_of(node.module, alias.name)) for alias in node.names]
    return found


def _module_of(module: str, name: str) -> str:
    path = PACKAGE.parent.joinpath(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if path.with_suffix(".py").is_file() or path.is_dir() else module


def _matches(name: str, rule: str) -> bool:
    """`a.b` forbids a.b and its submodules; `a.b.` only the submodules."""
    if rule.endswith("."):
        return name.startswith(rule)
    return name == rule or name.startswith(rule + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(layer: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}"
        for path in _modules(layer)
        for line, name in _imports(path)
        if any(_matches(name, rule) for rule in FORBIDDEN[layer])
    ]
    assert not bad, "\n".join(bad)


def test_the_engine_names_no_cgroup_file() -> None:
    bad = []
    for path in _modules("engine"):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and CGROUP_FILE.search(node.value)
            ):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def _docstrings(tree: ast.Module) -> set[int]:
    """Docstrings may explain what a cgroup file means; code may not open one."""
    found = set()
    for owner in ast.walk(tree):
        if isinstance(owner, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = owner.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """The checks themselves: a raw syscall import and a cgroup file name are seen."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import fcntl\nfrom supervisor.cgroups import files, Limits\n"
        "from supervisor.cgroups.v2 import V2Unit\n"
    )
    names = [name for _, name in _imports(sample)]
    assert names == ["fcntl", "supervisor.cgroups.files", "supervisor.cgroups",
                     "supervisor.cgroups.v2"]  # fmt: skip
    assert CGROUP_FILE.search("memory.events") and not CGROUP_FILE.search("unit.exited")
