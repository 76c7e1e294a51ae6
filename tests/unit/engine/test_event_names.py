"""Every event name the engine publishes is listed in docs/control.md, the names clients
filter on (pure text check: no kernel)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# `self._event("name"` and `self._event(\n    "name"`; the daemon-initiated ends go through
# `_end_for(reason)`, so their names are the reasons, checked below by hand.
LITERAL = re.compile(r'_event\(\s*"([a-z_]+)"')
ENDED_BY_THE_DAEMON = {
    "watchdog", "unhealthy", "start_timeout", "memory_pressure", "cpu_pressure", "io_pressure",
}  # fmt: skip


def _documented() -> set[str]:
    text = (ROOT / "docs" / "control.md").read_text()
    table = text.split("**Event names.**", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"`([a-z_]+)`", table))


def test_every_published_event_is_documented() -> None:
    published = {
        name
        for path in (ROOT / "supervisor" / "engine").glob("*.py")
        for name in LITERAL.findall(path.read_text())
    }
    assert {"started", "exited", "oom_kill", "valid", "removed"} <= published  # the scan works
    missing = (published | ENDED_BY_THE_DAEMON) - _documented()
    assert not missing, f"events missing from docs/control.md: {sorted(missing)}"
