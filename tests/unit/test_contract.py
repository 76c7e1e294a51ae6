"""The contract's names are declared once (supervisor/contract.py); every copy must agree.

The copies people and programs read: the README's tables, docs/control.md, the OpenAPI
document, the metrics' labels, the CLI's colours. A renamed or added state, health value or
exit reason that is not carried everywhere fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from supervisor.api.openapi import document
from supervisor.cli import names
from supervisor.cli.render import STATE_COLORS
from supervisor.contract import (
    EXIT_CODE,
    LAUNCH_ERROR,
    LAUNCH_RESOURCES,
    SIGNAL,
    ExitReason,
    HealthState,
    State,
)
from supervisor.engine.states import Intent, StopReason, intent_from

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONTROL = (ROOT / "docs" / "control.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_sandboxctls_plain_names_are_the_contracts() -> None:
    """cli/names.py: the strings sandboxctl compares with, without importing enum."""
    for state in State:
        assert getattr(names, state.name) == state.value, state
    assert names.OOM_KILLED == ExitReason.OOM_KILLED
    assert (names.EXIT_CODE, names.SIGNAL, names.LAUNCH_ERROR) == (EXIT_CODE, SIGNAL, LAUNCH_ERROR)


def test_the_readme_states_table_is_the_contracts() -> None:
    table = _section(README, "## States and exit reasons")
    listed = re.findall(r"^\| `([a-z]+)` \|", table, re.M)
    assert listed == [s.value for s in State]


def test_the_readme_names_every_exit_reason() -> None:
    text = _section(README, "## States and exit reasons")
    for reason in (*ExitReason, EXIT_CODE, SIGNAL, LAUNCH_ERROR):
        assert f"`{reason}" in text, reason
    assert f"`{LAUNCH_ERROR}{LAUNCH_RESOURCES}: " in text  # the stage that is retried


def test_control_doc_names_every_health_value() -> None:
    listed = re.search(r"`sandboxd_unit_health\{state\}` \(([a-z, ]+)\)", CONTROL)
    assert listed is not None
    assert set(listed[1].split(", ")) == {h.value for h in HealthState}


def test_the_openapi_document_uses_the_contracts_names() -> None:
    schemas = document()["components"]["schemas"]
    status = schemas["UnitStatus"]["properties"]
    assert status["state"]["enum"] == [s.value for s in State]
    assert status["health"]["anyOf"][0]["enum"] == [h.value for h in HealthState]
    for reason in ExitReason:
        assert reason.value in status["last_exit"]["anyOf"][0]["description"]


def test_every_state_has_a_colour() -> None:
    assert set(STATE_COLORS) == {s.value for s in State}


def test_stop_reasons_are_exit_reasons_but_self_stop() -> None:
    """A run the daemon ends for a reason exits with that reason; a self-stop with its own."""
    exits = {r.value for r in ExitReason}
    assert {r.value for r in StopReason} - exits == {StopReason.SELF_STOP.value}


def test_intents_round_trip_through_the_state_file() -> None:
    values = [i.value for i in Intent] + [r.value for r in StopReason]
    assert len(values) == len(set(values)), "an intent must name one thing"
    for kind in (*Intent, *StopReason):
        assert intent_from(kind.value) is kind
    assert intent_from(None) is None and intent_from("from-a-future-daemon") is None
