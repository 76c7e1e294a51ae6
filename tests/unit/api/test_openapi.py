"""The OpenAPI document describes every route the server has, and is a valid OpenAPI 3 doc."""

from __future__ import annotations

import schemathesis
from api_helpers import call_json

from supervisor.api import auth
from supervisor.api.metrics import Metrics
from supervisor.api.openapi import document
from supervisor.api.server import make_app
from supervisor.api.testing import FakeController, ServerThread


def test_every_route_is_documented() -> None:
    app = make_app(FakeController([]), auth.Policy(group_gid=None), Metrics())
    documented = {
        (method.upper(), path) for path, ops in document()["paths"].items() for method in ops
    }
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == documented


def test_document_is_served_and_valid(server: ServerThread) -> None:
    status, body = call_json(server.path, "GET", "/v1/openapi.json")
    assert status == 200 and body == document()
    schema = schemathesis.openapi.from_dict(body)
    assert len(list(schema.get_all_operations())) == len(
        [m for ops in body["paths"].values() for m in ops]
    )
