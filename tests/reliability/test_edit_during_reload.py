"""The unit directory edited while reloads run: partial writes, renames, deletions, garbage and
odd file types never crash the daemon or restart a valid running unit.

Protected units are written so that every proper prefix of their file is invalid (the required
`exec` is the last line and any cut inside it is a TOML error) or means exactly the same thing:
whatever a reload reads mid-write, "invalid: the running version keeps running" or "unchanged"
is the only correct outcome, so their PID 1 must never change. Ephemeral units are created,
renamed, half-written and deleted around them. Reloads come from the API and from SIGHUP, as
fast as the daemon answers, for SANDBOXD_EDIT_SECONDS (default 20).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import (
    MARK,
    cgroup_version,
    env_int,
    env_seconds,
    marked_processes,
    pid1s,
    poll,
    uname,
    unit_text,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

EDIT_SECONDS = env_seconds("SANDBOXD_EDIT_SECONDS", 20.0, 20.0)
SEED = env_int("SANDBOXD_EDIT_SEED", 7)


def protected_text(daemon: Any, name: str) -> str:
    """[service] last, `exec` its last line: every proper prefix is invalid or equivalent."""
    return (
        '[resources]\nmemory_max = "64M"\npids_max = 32\n'
        '[restart]\ndelay = "100ms"\n'
        f'[service]\nstop_timeout = "300ms"\nenv = {{ {MARK} = "{daemon.cgroup_parent}/{name}" }}\n'
        'exec = ["/bin/sleep", "100000"]\n'
    )


def write_slowly(path: Path, text: str, rng: random.Random) -> None:
    """An in-place, non-atomic write in chunks (what `echo >` or a careless editor does)."""
    data = text.encode()
    with open(path, "wb", buffering=0) as f:
        while data:
            n = rng.randint(1, max(1, len(data)))
            f.write(data[:n])
            data = data[n:]
            time.sleep(rng.uniform(0, 0.01))


class Editor(threading.Thread):
    def __init__(self, daemon: Any, protected: dict[str, str], seed: int) -> None:
        super().__init__(daemon=True)
        self.d, self.protected, self.rng = daemon, protected, random.Random(seed)
        self.halt = threading.Event()
        self.edits = 0
        self.error: BaseException | None = None
        self.serial = 0

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self.edit()
                self.edits += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def ephemeral(self) -> str:
        self.serial += 1
        return uname(self.d, f"e{self.serial}")

    def edit(self) -> None:  # noqa: PLR0912 - one branch per kind of edit, flat on purpose
        rng, units = self.rng, self.d.units
        ephemerals = sorted(p for p in units.glob("e*.toml") if p.is_file())
        kind = rng.choice(
            ["prot-rewrite", "prot-slow", "prot-truncate", "prot-garbage", "eph-new",
             "eph-rename", "eph-delete", "eph-partial", "eph-invalid", "odd", "odd-cleanup"]
        )  # fmt: skip
        name = rng.choice(sorted(self.protected))
        path = units / f"{name}.toml"
        text = self.protected[name]
        match kind:
            case "prot-rewrite":  # atomic rename of identical content
                self.d.write_unit(name, text)
            case "prot-slow":
                write_slowly(path, text, rng)
            case "prot-truncate":  # a reader may see the empty or a cut file for a while
                path.write_text(text[: rng.randint(0, len(text) - 2)])
                time.sleep(rng.uniform(0, 0.05))
                write_slowly(path, text, rng)
            case "prot-garbage":
                path.write_bytes(rng.choice([b"\xff\xfe\x00bad", b"[service\n", b"exec = 1\n"]))
                time.sleep(rng.uniform(0, 0.05))
                self.d.write_unit(name, text)
            case "eph-new" if len(ephemerals) < 6:
                e = self.ephemeral()
                self.d.write_unit(e, unit_text(["/bin/sleep", "100000"], self.d, e))
            case "eph-rename" if ephemerals:
                src = rng.choice(ephemerals)
                e = self.ephemeral()
                # The marker keeps the old name: only the file moves (what `mv` does).
                with contextlib.suppress(FileNotFoundError):
                    os.rename(src, units / f"{e}.toml")
            case "eph-delete" if ephemerals:
                with contextlib.suppress(FileNotFoundError):
                    rng.choice(ephemerals).unlink()
            case "eph-partial" if ephemerals:
                target = rng.choice(ephemerals)
                with contextlib.suppress(FileNotFoundError):
                    full = target.read_text()
                    target.write_text(full[: rng.randint(0, len(full))])
            case "eph-invalid":
                e = self.ephemeral()
                (units / f"{e}.toml").write_text('[service]\nexec = ["relative"]\n')
            case "odd":
                self.odd(units, rng)
            case "odd-cleanup":
                for p in units.iterdir():
                    if p.name.startswith(("x", ".")) or p.suffix != ".toml":
                        with contextlib.suppress(OSError):
                            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
            case _:
                pass
        time.sleep(rng.uniform(0, 0.02))

    def odd(self, units: Path, rng: random.Random) -> None:
        n = rng.randint(0, 99)
        with contextlib.suppress(OSError):
            match rng.choice(["dir", "fifo", "dangling", "loop", "swap", "dot", "huge"]):
                case "dir":
                    (units / f"xdir{n}.toml").mkdir()
                case "fifo":  # a reader that opens it blocking would hang the daemon
                    os.mkfifo(units / f"xfifo{n}.toml")
                case "dangling":
                    (units / f"xdang{n}.toml").symlink_to(units / "nowhere.toml")
                case "loop":
                    (units / f"xloop{n}.toml").symlink_to(units / f"xloop{n}.toml")
                case "swap":
                    (units / f".{n}.toml.swp").write_bytes(os.urandom(64))
                case "dot":
                    (units / f".x{n}.toml").write_text("[service]\n")
                case "huge":
                    (units / f"xhuge{n}.toml").write_bytes(b"#" * (2 << 20))


def test_edits_during_reloads(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    names = [uname(daemon, f"p{i}") for i in range(4)]
    protected = {name: protected_text(daemon, name) for name in names}
    for name, text in protected.items():
        daemon.write_unit(name, text)
    daemon.start()
    assert daemon.proc is not None
    first = {n: daemon.wait_unit(n, lambda u: u["state"] == "running")["pid"] for n in protected}
    editor = Editor(daemon, protected, SEED)
    editor.start()
    reloads, hups, problems = 0, 0, list[str]()
    deadline = time.monotonic() + EDIT_SECONDS
    try:
        while time.monotonic() < deadline and not problems:
            if reloads % 3 == 2:
                daemon.signal(signal.SIGHUP)
                hups += 1
            code, body = daemon.request("POST", "/v1/reload")
            reloads += 1
            if code != 200:
                problems.append(f"reload answered {code}: {body}")
            status = daemon.status()
            for name, pid in first.items():
                u = status.get(name, {})
                if (u.get("state"), u.get("pid")) != ("running", pid):
                    problems.append(f"protected {name} disturbed: {u} (was pid {pid})")
            if daemon.proc.poll() is not None:
                problems.append(f"daemon died: {daemon.proc.returncode}")
    except (OSError, http.client.HTTPException) as exc:
        problems.append(f"daemon stopped answering: {exc!r}")
    finally:
        editor.halt.set()
        editor.join(60)
    tail = daemon.stderr_path().read_text()[-3000:]
    assert not problems, "\n".join(problems) + "\ndaemon stderr tail:\n" + tail
    assert editor.error is None, repr(editor.error)
    assert not editor.is_alive()
    # Tidy the directory into a known final shape; the last reload must converge on it.
    for p in daemon.units.iterdir():
        if p.stem not in protected or p.suffix != ".toml":
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    for name, text in protected.items():
        daemon.write_unit(name, text)
    code, body = daemon.request("POST", "/v1/reload")
    assert code == 200 and not body.get("invalid"), body

    def converged() -> bool:
        status = daemon.status()
        return (
            set(status) == set(protected)
            and all(status[n]["pid"] == first[n] for n in protected)
            and pid1s(daemon) == {n: [p] for n, p in first.items()}
            and set(marked_processes(daemon)) == set(protected)
        )

    ok = poll(converged, 60)
    assert ok, (daemon.status(), pid1s(daemon))
    print(f"\n{editor.edits} edits, {reloads} API reloads, {hups} SIGHUPs in {EDIT_SECONDS:.0f}s")
    assert editor.edits > 50 and reloads > 20
    assert daemon.stop() == 0
