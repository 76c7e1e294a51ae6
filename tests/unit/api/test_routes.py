"""The /v1/ endpoints against a fake controller, through the real server on a Unix socket."""

from __future__ import annotations

import datetime as dt
import json

from api_helpers import call, call_json, stream_open

from supervisor.api.testing import FakeController, ServerThread
from supervisor.engine.model import ReloadResult, UnitEvent
from tests.support.waiting import wait_for

CONTRACT_KEYS = {
    "name", "state", "pid", "restarts", "last_exit", "oom_kills", "memory_bytes",
    "started_at", "error", "health",
}  # fmt: skip


def test_units_lists_the_contract_shape_sorted(server: ServerThread) -> None:
    status, body = call_json(server.path, "GET", "/v1/units")
    assert status == 200
    assert [u["name"] for u in body["units"]] == ["cron", "db", "web"]
    for unit in body["units"]:
        assert unit.keys() >= CONTRACT_KEYS
    web = body["units"][2]
    assert web["state"] == "running" and web["pid"] == 4242
    assert dt.datetime.fromisoformat(web["started_at"]).tzinfo is not None
    assert body["units"][0]["pid"] is None and body["units"][0]["started_at"] is None


def test_unit_detail_and_missing_unit(server: ServerThread) -> None:
    status, body = call_json(server.path, "GET", "/v1/units/db")
    assert status == 200
    assert body["state"] == "backoff" and body["next_start_in"] == 2.5
    assert {"limits", "usage", "recent_events", "recent_exits"} <= body.keys()
    status, body = call_json(server.path, "GET", "/v1/units/nope")
    assert (status, body) == (404, {"error": "no such unit: nope", "code": "no-such-unit"})


def test_actions_call_the_controller(server: ServerThread, controller: FakeController) -> None:
    for verb in ("stop", "start", "restart"):
        status, body = call_json(server.path, "POST", f"/v1/units/web/{verb}")
        assert status == 200, body
        assert body["name"] == "web"
    assert controller.calls == [("stop", "web"), ("start", "web"), ("restart", "web")]
    assert controller.units["web"].restarts == 1
    status, body = call_json(server.path, "POST", "/v1/units/ghost/start")
    assert (status, body["code"]) == (404, "no-such-unit")
    assert len(controller.calls) == 3  # nothing was attempted for an unknown unit


def test_failed_action_is_409(server: ServerThread, controller: FakeController) -> None:
    controller.fail.add("web")
    status, body = call_json(server.path, "POST", "/v1/units/web/start")
    assert (status, body) == (409, {"error": "web: launch failed", "code": "failed"})


def test_reload_returns_what_happened(server: ServerThread, controller: FakeController) -> None:
    controller.reload_result = ReloadResult(started=["new"], invalid={"bad": ["bad.toml: x"]})
    status, body = call_json(server.path, "POST", "/v1/reload", b"{}")
    assert status == 200
    assert body["started"] == ["new"] and body["ok"] is False
    assert body["invalid"] == {"bad": ["bad.toml: x"]}


def test_bodies_must_be_an_empty_json_object(server: ServerThread) -> None:
    for body, needle in (
        (b"{not json", "body: invalid json"),
        (b"[1, 2]", "body: must be a json object"),
        (b'{"force": true}', "body: takes no keys, got force"),
        (b"\xff\xfe", "body: invalid json"),
        (b"  ", "body: invalid json"),  # whitespace alone is no JSON value
        (b"NaN", "body: invalid json: the constant NaN is not json"),
    ):
        status, answer = call_json(server.path, "POST", "/v1/reload", body)
        assert status == 400, body
        assert (answer["code"], answer["field"]) == ("bad-request", "body"), body
        assert needle in answer["error"], (body, answer)
    for body in (None, b"", b"{}", b" {} \n"):
        status, _ = call_json(server.path, "POST", "/v1/reload", body)
        assert status == 200, body


def test_a_vertical_tab_is_not_a_json_body(
    server: ServerThread, controller: FakeController
) -> None:
    """Regression (schemathesis ST201): `-d $'\\x0b'` was taken as an empty body because
    bytes.strip() drops \\x0b, which JSON does not count as whitespace."""
    headers = {"Content-Type": "application/json"}
    status, _, raw = call(server.path, "POST", "/v1/units/web/stop", b"\x0b", headers)
    answer = json.loads(raw)
    assert (status, answer["code"], answer["field"]) == (400, "bad-request", "body")
    assert controller.calls == []


def test_a_body_of_another_media_type_is_415(
    server: ServerThread, controller: FakeController
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}  # curl -d without -H
    status, _, raw = call(server.path, "POST", "/v1/units/web/restart", b"{}", headers)
    answer = json.loads(raw)
    assert (status, answer["code"]) == (415, "unsupported-media-type")
    assert "application/json" in answer["error"]
    assert controller.calls == []


def test_query_parameters_are_checked_against_the_document(server: ServerThread) -> None:
    """Regression: `?n=` (empty) was taken as no n; now every query is typed by the document."""
    for query, field in (
        ("n=&follow=0", "query.n"),  # the exact request the fuzzer found
        ("n=%2B5", "query.n"),  # +5: int() takes it, the document's integer does not
        ("n=%205", "query.n"),
        ("n=5_0", "query.n"),
        ("n=%D9%A5", "query.n"),  # ARABIC-INDIC DIGIT FIVE
        ("n=-1", "query.n"),
        ("n=1000001", "query.n"),
        ("follow=true", "query.follow"),
        ("follow=", "query.follow"),
        ("n=1&n=2", "query.n"),
        ("lines=3", "query.lines"),
    ):
        status, body = call_json(server.path, "GET", f"/v1/units/web/logs?{query}")
        assert (status, body["code"], body["field"]) == (400, "bad-request", field), query
        assert body["error"].startswith(f"{field}: "), body
    status, body = call_json(server.path, "GET", "/v1/units?verbose=1")
    assert (status, body["field"]) == (400, "query.verbose")
    status, _, _ = call(server.path, "GET", "/v1/units/web/logs?n=0&follow=0")
    assert status == 200


def test_a_get_takes_no_body(server: ServerThread) -> None:
    status, body = call_json(server.path, "GET", "/v1/units", b"{}")
    assert (status, body["field"]) == (400, "body")


def test_huge_body_is_413(server: ServerThread, controller: FakeController) -> None:
    status, answer = call_json(server.path, "POST", "/v1/reload", b"{" + b" " * (1 << 20) + b"}")
    assert (status, answer["code"]) == (413, "body-too-large")
    assert controller.calls == []


def test_router_errors_are_json(server: ServerThread) -> None:
    status, headers, raw = call(server.path, "DELETE", "/v1/units")
    assert status == 405 and json.loads(raw)["code"] == "method-not-allowed"
    assert "GET" in headers["Allow"]
    status, body = call_json(server.path, "GET", "/v1/nothing")
    assert (status, body["code"]) == (404, "not-found")
    status, body = call_json(server.path, "GET", "/v1/units/web/frobnicate")
    assert status in (404, 405) and body["code"] in ("not-found", "method-not-allowed")


def test_internal_errors_are_500_and_the_server_goes_on(
    server: ServerThread, controller: FakeController
) -> None:
    def broken() -> str:
        raise RuntimeError("boom")

    controller.list_text = broken  # type: ignore[method-assign]  (what GET /v1/units asks)
    status, body = call_json(server.path, "GET", "/v1/units")
    assert (status, body["code"]) == (500, "internal")
    status, _ = call_json(server.path, "GET", "/v1/units/web")
    assert status == 200


def test_logs_tail_and_whole_file(server: ServerThread, controller: FakeController) -> None:
    log = controller.log_dir / "web.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    status, _, raw = call(server.path, "GET", "/v1/units/web/logs?n=3")
    assert status == 200 and raw == b"line 997\nline 998\nline 999\n"
    _, _, raw = call(server.path, "GET", "/v1/units/web/logs")
    assert raw == log.read_bytes()
    _, _, raw = call(server.path, "GET", "/v1/units/db/logs")  # no log file yet
    assert raw == b""
    status, body = call_json(server.path, "GET", "/v1/units/web/logs?n=many")
    assert (status, body["code"]) == (400, "bad-request")
    status, body = call_json(server.path, "GET", "/v1/units/web/logs?follow=maybe")
    assert status == 400


def test_logs_follow_across_rotation(server: ServerThread, controller: FakeController) -> None:
    log = controller.log_dir / "web.log"
    log.write_bytes(b"old\n")
    conn, response = stream_open(server.path, "/v1/units/web/logs?n=10&follow=1")
    try:
        assert response.status == 200
        assert response.read1(100) == b"old\n"
        with log.open("ab") as f:
            f.write(b"before rotation\n")
        log.rename(log.with_suffix(".log.1"))
        log.write_bytes(b"after rotation\n")
        got = b""
        while b"after rotation\n" not in got:
            got += response.read1(100)
        assert got == b"before rotation\nafter rotation\n"
        log.write_bytes(b"truncated\n")  # copytruncate-style: same file, smaller
        got = b""
        while b"truncated\n" not in got:
            got += response.read1(100)
        assert got == b"truncated\n"
    finally:
        conn.close()


def test_event_stream(server: ServerThread, controller: FakeController) -> None:
    conn, response = stream_open(server.path, "/v1/events?unit=web")
    try:
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("application/x-ndjson")
        wait_for(lambda: controller.subscribers == 1)
        at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
        server.soon(lambda: controller.publish(UnitEvent("db", "exited", at, "backoff")))
        server.soon(lambda: controller.publish(UnitEvent("web", "oom-kill", at, "backoff")))
        buf = b""
        while b"\n" not in buf:
            buf += response.read1(4096)
        event = json.loads(buf)
        # seq: the controller numbers its events, as the engine does
        assert event == {
            "seq": 2, "unit": "web", "event": "oom-kill", "at": at.isoformat(),
            "state": "backoff", "detail": {},
        }  # fmt: skip
    finally:
        conn.close()
    wait_for(lambda: controller.subscribers == 0)  # the vanished client's handler ended
    status, _ = call_json(server.path, "GET", "/v1/events?unit=ghost")
    assert status == 404


def test_top_is_every_unit_in_one_frame(server: ServerThread) -> None:
    status, frame = call_json(server.path, "GET", "/v1/top")
    assert status == 200
    assert set(frame) == {"monotonic", "at", "units"}
    web = next(u for u in frame["units"] if u["name"] == "web")
    assert web["memory_bytes"] == 12 << 20 and web["memory_max"] == 256 << 20
    assert web["cpu_usage_usec"] == 1_500_000 and web["memory_pressure"] is None
