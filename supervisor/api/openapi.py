"""The OpenAPI 3 document of the control API, served at `/v1/openapi.json`.

Written by hand next to the handlers (routes.py) and checked against them by a schemathesis test,
so the document is the contract clients can generate code from, not a guess.
"""

from __future__ import annotations

import signal
from typing import Any

from supervisor.api.errors import CODES, INVALID_UNIT, NO_SUCH_UNIT
from supervisor.api.events import RING_SIZE
from supervisor.contract import EXIT_CODE, LAUNCH_ERROR, SIGNAL, ExitReason, HealthState, State

MAX_LOG_LINES = 1_000_000
MAX_SEQ = 2**53  # JSON numbers stay exact up to here
STATES = [s.value for s in State]
HEALTH_STATES = [h.value for h in HealthState]
ERROR_CODES = sorted({*CODES.values(), NO_SUCH_UNIT, INVALID_UNIT})
SIGNALS = sorted(s.name for s in signal.Signals)
# A transient unit's name: a unit name without `@` (that would read as a template's instance).
TRANSIENT_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


UNIT_STATUS: dict[str, Any] = {
    "type": "object",
    "required": [
        "name", "state", "pid", "restarts", "last_exit", "oom_kills", "memory_bytes",
        "started_at", "error", "health",
    ],
    "properties": {
        "name": {"type": "string"},
        "state": {"type": "string", "enum": STATES},
        "pid": _nullable({"type": "integer", "minimum": 1}),
        "restarts": {"type": "integer", "minimum": 0},
        "last_exit": _nullable(
            {"type": "string", "description": f"{EXIT_CODE}N, {SIGNAL}NAME, "
             f"{LAUNCH_ERROR}<stage>: <message>, or one of: " + ", ".join(ExitReason)}
        ),
        "oom_kills": {"type": "integer", "minimum": 0},
        "memory_bytes": _nullable({"type": "integer", "minimum": 0}),
        "started_at": _nullable({"type": "string", "format": "date-time"}),
        "error": _nullable({"type": "string"}),
        "health": _nullable({"type": "string", "enum": HEALTH_STATES}),
        "next_start_in": _nullable(
            {"type": "number", "description": "seconds until the next start out of backoff"}
        ),
        "uptime": _nullable(
            {"type": "number", "minimum": 0, "description": "seconds the current run has run, "
             "by the monotonic clock (a wall-clock step does not change it)"}
        ),
        "file_invalid": {
            "type": "boolean",
            "description": "the unit file is invalid now; the last valid version is what runs",
        },
        "network": _nullable(_ref("UnitNetwork")),
    },
}  # fmt: skip

UNIT_NETWORK: dict[str, Any] = {
    "type": "object",
    "description": "the unit's [network]: its mode and, for bridge mode, the address leased to "
    "it (kept while it is stopped; null before its first start), its MAC, bridge and gateway, "
    "whether it has outbound NAT and its published ports",
    "required": ["mode"],
    "properties": {
        "mode": {"type": "string", "enum": ["none", "host", "bridge"]},
        "address": _nullable({"type": "string", "description": "IPv4 with prefix, 10.88.0.2/16"}),
        "mac": _nullable({"type": "string"}),
        "bridge": _nullable({"type": "string"}),
        "gateway": _nullable({"type": "string"}),
        "address6": _nullable(
            {
                "type": "string",
                "description": "with the daemon's subnet6 only: IPv6 with prefix, fd00:88::2/64",
            }
        ),
        "gateway6": _nullable({"type": "string"}),
        "outbound": {"type": "boolean", "description": "its traffic may leave the host (NAT)"},
        "ports": {
            "type": "array",
            "items": {"type": "string"},
            "description": 'published ports, canonical: "127.0.0.1:5353:53/udp"',
        },
    },
}

UNIT_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["unit", "event", "at", "state", "detail"],
    "properties": {
        "seq": {
            "type": "integer",
            "minimum": 1,
            "description": "on /v1/events: the event's number, 1, 2, 3, ... for the life of one "
            "daemon (see the X-Event-Epoch header); pass it back as `since` to resume",
        },
        "unit": {"type": "string"},
        "event": {"type": "string", "description": "started, exited, oom-kill, backoff, ..."},
        "at": {"type": "string", "format": "date-time"},
        "state": {"type": "string", "enum": STATES},
        "detail": {"type": "object"},
    },
}

UNIT_DETAIL: dict[str, Any] = {
    "allOf": [
        _ref("UnitStatus"),
        {
            "type": "object",
            "required": ["limits", "usage", "recent_events", "recent_exits"],
            "properties": {
                "spec_hash": _nullable({"type": "string"}),
                "limits": {"type": "object", "description": "the unit's [resources]"},
                "usage": {"type": "object", "description": "cgroup statistics"},
                "recent_events": {"type": "array", "items": _ref("UnitEvent")},
                "recent_exits": {"type": "array", "items": {"type": "string"}},
                "userns": _nullable(
                    {
                        "type": "string",
                        "pattern": "^[0-9]+-[0-9]+$",
                        "description": "the host ids (first-last) of the unit's user namespace; "
                        "null without one",
                    }
                ),
            },
        },
    ]
}

_COUNT = _nullable({"type": "integer", "minimum": 0})
_PSI_LINE: dict[str, Any] = {
    "type": "object",
    "required": ["avg10", "avg60", "avg300", "total"],
    "properties": {
        "avg10": {"type": "number", "minimum": 0, "description": "% of the last 10 s stalled"},
        "avg60": {"type": "number", "minimum": 0},
        "avg300": {"type": "number", "minimum": 0},
        "total": {"type": "integer", "minimum": 0, "description": "microseconds stalled"},
    },
}
PSI: dict[str, Any] = {
    "type": "object",
    "description": "one resource's pressure stall information: `some` (at least one task "
    "stalled) and `full` (all non-idle tasks stalled at once)",
    "required": ["some"],
    "properties": {"some": _ref("PsiLine"), "full": _ref("PsiLine")},
}
TOP_UNIT: dict[str, Any] = {
    "type": "object",
    "required": [
        "name", "state", "pid", "restarts", "health", "memory_max", "memory_bytes",
        "cpu_usage_usec", "pids", "io_read_bytes", "io_write_bytes", "memory_pressure",
    ],
    "properties": {
        "name": {"type": "string"},
        "state": {"type": "string", "enum": STATES},
        "pid": _nullable({"type": "integer", "minimum": 1}),
        "restarts": {"type": "integer", "minimum": 0},
        "health": _nullable({"type": "string", "enum": HEALTH_STATES}),
        "memory_max": _COUNT,
        "memory_bytes": _COUNT,
        "cpu_usage_usec": _COUNT,
        "pids": _COUNT,
        "io_read_bytes": _COUNT,
        "io_write_bytes": _COUNT,
        "memory_pressure": _nullable(_ref("Psi")),
    },
}  # fmt: skip
TOP_FRAME: dict[str, Any] = {
    "type": "object",
    "required": ["monotonic", "at", "units"],
    "properties": {
        "monotonic": {
            "type": "number",
            "description": "the daemon's monotonic clock (seconds) when the frame was read: "
            "a rate is the difference of two frames' counters over the difference of this",
        },
        "at": {"type": "string", "format": "date-time"},
        "units": {"type": "array", "items": _ref("TopUnit")},
    },
}

_NAMES = {"type": "array", "items": {"type": "string"}}
RELOAD_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["started", "restarted", "updated", "stopped", "unchanged", "invalid", "ok"],
    "properties": {
        "started": _NAMES,
        "restarted": _NAMES,
        "updated": {**_NAMES, "description": "resource-only changes applied live"},
        "stopped": {**_NAMES, "description": "file gone: the unit's run is being stopped"},
        "unchanged": _NAMES,
        "removed": {
            **_NAMES,
            "description": "file gone and nothing to stop: the unit never ran (it was "
            "invalid) or its run had already ended",
        },
        "fixed": {
            **_NAMES,
            "description": "invalid before, valid again and the same as the version that "
            "runs, so nothing changes (also listed in unchanged)",
        },
        "deferred": {
            **_NAMES,
            "description": "new or changed units taken in without a start (autostart = false, "
            "or stopped by an operator); they use the new file on their next start",
        },
        "invalid": {
            "type": "object",
            "additionalProperties": _NAMES,
            "description": "unit name -> error lines",
        },
        "ok": {"type": "boolean", "description": "false when any unit is invalid"},
        "seq": {
            "type": "integer",
            "minimum": 0,
            "description": "the newest event's seq when the reload began to act: follow "
            "/v1/events?since=seq to see how the units it started fare",
        },
    },
}

IMAGES: dict[str, Any] = {
    "type": "object",
    "required": ["images", "unused"],
    "properties": {
        "images": {
            "type": "array",
            "description": "each image (reference and digest) some unit names, by reference",
            "items": {
                "type": "object",
                "required": ["ref", "name", "tag", "digest", "layers", "size", "unpacked",
                             "units"],
                "properties": {
                    "ref": {"type": "string", "description": "as in the unit, normalised"},
                    "name": {"type": "string", "description": "the layout or archive path"},
                    "tag": _nullable({"type": "string", "description": "null for an archive"}),
                    "digest": {"type": "string", "description": "the manifest's sha256 (an "
                               "archive: the config's)"},
                    "layers": {"type": "integer", "minimum": 0},
                    "size": {"type": "integer", "minimum": 0, "description": "bytes on disk "
                             "of its unpacked layers (a layer shared with another image counts "
                             "in both)"},
                    "unpacked": {"type": "boolean", "description": "every layer is in the "
                                 "store (false before the first start)"},
                    "units": _NAMES,
                },
            },
        },
        "unused": {
            "type": "object",
            "required": ["layers", "size"],
            "description": "stored layers no unit uses: what a prune removes",
            "properties": {
                "layers": {"type": "integer", "minimum": 0},
                "size": {"type": "integer", "minimum": 0},
            },
        },
    },
}  # fmt: skip

PRUNE_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["removed", "freed"],
    "properties": {
        "removed": {"type": "integer", "minimum": 0, "description": "layers removed"},
        "freed": {"type": "integer", "minimum": 0, "description": "bytes on disk freed"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "one lower-case line for people"},
        "code": {"type": "string", "enum": ERROR_CODES},
        "field": {
            "type": "string",
            "description": "for a request that does not match this document: what is wrong "
            "(`query.n`, `body`)",
        },
        "errors": {
            "type": "array",
            "items": {"type": "string"},
            "description": "for `invalid-unit`: every problem of the unit, `KEY: message`",
        },
    },
}

EMPTY_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": False, "maxProperties": 0}
        }
    },
}

NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "example": "web",
}

_COMMON = {
    "400": _error("a query or body that does not match this document (see `field`)"),
    "403": _error("the peer may not do this"),
}
_WITH_BODY = {
    "413": _error("body too large"),
    "415": _error("a body that is not application/json"),
}
_UNIT_ERRORS = {**_COMMON, "404": _error("no such unit")}


def _action(verb: str, what: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{verb}Unit",
            "summary": what,
            "parameters": [NAME],
            "requestBody": EMPTY_BODY,
            "responses": {
                "200": _json(_ref("UnitDetail"), "the unit once the action is done"),
                "409": _error("the action failed"),
                **_WITH_BODY,
                **_UNIT_ERRORS,
            },
        }
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": False, "properties": properties,
              "required": required}  # fmt: skip
    return {"required": True, "content": {"application/json": {"schema": schema}}}


CREATE_UNIT = {
    "post": {
        "operationId": "createUnit",
        "summary": "make a transient unit (no file; `sandboxctl run`) and start it",
        "description": '`unit` holds the tables a unit file would (`{"service": {"exec": '
        '["/bin/true"]}}`), validated as a file is. The unit is written under the state '
        "dir, kept by `reload` and a daemon restart, forgotten at reboot; with `remove`, it is "
        "removed once its run is over. Answers once the start has had its effect, as "
        "`start` does, with `seq`: the newest event before the unit existed (follow "
        "`/v1/events?since=seq` to see all of its events).",
        "requestBody": _body(
            {
                "name": {
                    "type": "string",
                    "pattern": TRANSIENT_NAME,
                    "description": "default: run-<8 hex digits>",
                },
                "unit": {"type": "object"},
                "remove": {"type": "boolean"},
                "start": {
                    "type": "boolean",
                    "description": "false: make it stopped (default true)",
                },
            },
            ["unit"],
        ),
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["name", "seq", "unit"],
                    "properties": {
                        "name": {"type": "string"},
                        "seq": {"type": "integer", "minimum": 0},
                        "unit": _ref("UnitDetail"),
                    },
                },
                "the unit, once its start has had its effect",
            ),
            "409": _error(
                "the unit does not validate (`invalid-unit`, with `errors`), or the name is taken"
            ),
            **_WITH_BODY,
            **_COMMON,
        },
    }
}
DELETE_UNIT = {
    "operationId": "deleteUnit",
    "summary": "stop and remove a transient unit",
    "parameters": [NAME],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["removed"],
                "properties": {"removed": {"type": "string"}},
            },
            "the unit's run has ended and it is gone",
        ),
        "409": _error("not a transient unit (remove its file and reload)"),
        **_UNIT_ERRORS,
    },
}
KILL_UNIT = {
    "post": {
        "operationId": "killUnit",
        "summary": "send a signal to the unit's PID 1 (what `run --wait` forwards)",
        "parameters": [NAME],
        "requestBody": _body(
            {"signal": {"type": "string", "enum": SIGNALS, "example": "SIGINT"}},
            ["signal"],
        ),
        "responses": {
            "200": _json(_ref("UnitDetail"), "the unit after the signal was sent"),
            "409": _error("the unit is not running"),
            **_WITH_BODY,
            **_UNIT_ERRORS,
        },
    }
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "sandboxd control API",
            "version": "1",
            "description": "HTTP/1.1 + JSON on the daemon's Unix socket. Root may do "
            "everything, members of the configured group may GET, everyone else gets 403.",
        },
        "servers": [{"url": "http://localhost"}],
        "paths": {
            "/v1/units": {
                "get": {
                    "operationId": "listUnits",
                    "summary": "every unit, as `sandboxctl status --json` prints it",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["units"],
                                "properties": {
                                    "units": {"type": "array", "items": _ref("UnitStatus")}
                                },
                            },
                            "all units, sorted by name",
                        ),
                        **_COMMON,
                    },
                },
                **CREATE_UNIT,
            },
            "/v1/top": {
                "get": {
                    "operationId": "top",
                    "summary": "every unit's counters in one frame (what `sandboxctl top` shows): "
                    "cpu time, memory, pids, I/O bytes, memory pressure; null where not running "
                    "or not measured (pressure on cgroup v1)",
                    "responses": {
                        "200": _json(_ref("TopFrame"), "all units, sorted by name"),
                        **_COMMON,
                    },
                }
            },
            "/v1/units/{name}": {
                "delete": DELETE_UNIT,
                "get": {
                    "operationId": "getUnit",
                    "summary": "one unit in detail: limits, usage, recent events",
                    "parameters": [NAME],
                    "responses": {
                        "200": _json(_ref("UnitDetail"), "the unit"),
                        **_UNIT_ERRORS,
                    },
                },
            },
            "/v1/reload": {
                "post": {
                    "operationId": "reload",
                    "summary": "re-read every unit file and reconcile",
                    "requestBody": EMPTY_BODY,
                    "responses": {
                        "200": _json(_ref("ReloadResult"), "what the reload did"),
                        **_WITH_BODY,
                        **_COMMON,
                    },
                }
            },
            "/v1/images": {
                "get": {
                    "operationId": "listImages",
                    "summary": "the images units run from, their size on disk, and the "
                    "stored layers no unit uses",
                    "responses": {
                        "200": _json(_ref("Images"), "images by reference"),
                        **_COMMON,
                    },
                }
            },
            "/v1/images/prune": {
                "post": {
                    "operationId": "pruneImages",
                    "summary": "remove every stored layer no unit uses (never one a unit "
                    "names or still runs on)",
                    "requestBody": EMPTY_BODY,
                    "responses": {
                        "200": _json(_ref("PruneResult"), "what was removed"),
                        **_WITH_BODY,
                        **_COMMON,
                    },
                }
            },
            "/v1/units/{name}/start": _action("start", "start a unit (resets a failed one)"),
            "/v1/units/{name}/stop": _action("stop", "stop a unit"),
            "/v1/units/{name}/restart": _action("restart", "restart a unit"),
            "/v1/units/{name}/kill": KILL_UNIT,
            "/v1/units/{name}/logs": {
                "get": {
                    "operationId": "unitLogs",
                    "summary": "the service's output; with follow=1 a chunked stream that "
                    "follows rotation and restarts",
                    "parameters": [
                        NAME,
                        {
                            "name": "n",
                            "in": "query",
                            "description": "only the last n lines, read across the rotated "
                            "files too (default: all that the log and its rotated files hold)",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LOG_LINES},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "schema": {"type": "integer", "enum": [0, 1]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "raw service output",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_UNIT_ERRORS,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "events",
                    "summary": "unit events, one JSON object per line: the kept ones asked for "
                    "(since or replay, the daemon keeps the last 1000), then live ones",
                    "parameters": [
                        {
                            "name": "unit",
                            "in": "query",
                            "description": "only this unit's events",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "description": "first the kept events whose seq is above this (all "
                            "kept events if it is above the newest seq: an earlier daemon's)",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                        },
                        {
                            "name": "replay",
                            "in": "query",
                            "description": "first the last `replay` kept events (not with since)",
                            "schema": {"type": "integer", "minimum": 0, "maximum": RING_SIZE},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "description": "0: end after the kept events asked for (default 1: "
                            "then stream live events, never ending)",
                            "schema": {"type": "integer", "enum": [0, 1]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "UnitEvent objects with their seq, newline-delimited, "
                            "chunked, oldest first",
                            "headers": {
                                "X-Event-Epoch": {
                                    "description": "this daemon's event numbering: seq values "
                                    "of two epochs do not compare",
                                    "schema": {"type": "string"},
                                },
                                "X-Event-Seq": {
                                    "description": "the newest seq when the stream started (0: "
                                    "none yet), to resume from even if no event came",
                                    "schema": {"type": "integer", "minimum": 0},
                                },
                            },
                            "content": {"application/x-ndjson": {"schema": _ref("UnitEvent")}},
                        },
                        **_UNIT_ERRORS,
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "this document",
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3 document"),
                        **_COMMON,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "per-unit state, restarts, OOM kills, memory and its "
                            "peak, cpu, pids, I/O bytes, pressure (cgroup v2); the daemon's "
                            "reconcile, start and restart durations",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_COMMON,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "UnitStatus": UNIT_STATUS,
                "UnitNetwork": UNIT_NETWORK,
                "UnitDetail": UNIT_DETAIL,
                "UnitEvent": UNIT_EVENT,
                "ReloadResult": RELOAD_RESULT,
                "Images": IMAGES,
                "PruneResult": PRUNE_RESULT,
                "TopFrame": TOP_FRAME,
                "TopUnit": TOP_UNIT,
                "Psi": PSI,
                "PsiLine": _PSI_LINE,
                "Error": ERROR,
            }
        },
    }
