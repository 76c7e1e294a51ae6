"""The OpenAPI document describes every route the server has, and is a valid OpenAPI 3 doc."""

from __future__ import annotations

import copy

import pytest
import schemathesis
from api_helpers import call_json

from supervisor.api import auth, validation
from supervisor.api.metrics import Metrics
from supervisor.api.openapi import MAX_LOG_LINES, document
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


def test_the_request_checks_are_compiled_from_the_document() -> None:
    operations = validation.compile_document(document())
    logs = operations[("GET", "/v1/units/{name}/logs")]
    assert set(logs.query) == {"n", "follow"}
    assert logs.query["n"].maximum == MAX_LOG_LINES and logs.body is None
    assert operations[("POST", "/v1/reload")].body == validation.Body(required=False)


def test_a_request_keyword_the_checks_do_not_know_is_refused_up_front() -> None:
    """A schema the validator cannot check must fail when the app is made, never pass unchecked."""
    doc = copy.deepcopy(document())  # document() shares its parts between calls
    logs = doc["paths"]["/v1/units/{name}/logs"]["get"]
    logs["parameters"][1]["schema"]["multipleOf"] = 10
    with pytest.raises(validation.SchemaNotSupported, match="multipleOf"):
        validation.compile_document(doc)
    doc = copy.deepcopy(document())
    doc["paths"]["/v1/reload"]["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "properties": {"force": {"type": "boolean"}},
    }
    with pytest.raises(validation.SchemaNotSupported, match="request body schema"):
        validation.compile_document(doc)
