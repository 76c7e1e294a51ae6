"""Every request is checked against the OpenAPI document before a handler sees it.

The document (openapi.py) is the one declaration of what each operation takes; this module
compiles its parameters and request bodies once, when the app is made, and a middleware refuses
what does not match with 400 (415 for a body that is not JSON) and a JSON error naming the field
(`"field": "query.n"`). Handlers then read typed values from `request[QUERY]` and never parse
raw strings themselves, so the document and the handlers cannot disagree on what is valid.

Strict on purpose, as a control socket for root should be: a query parameter the operation does
not declare, or given twice, is an error; an integer is ASCII digits with an optional minus sign
(no `+5`, ` 5`, `5_0` or other scripts' digits, which `int()` would take); a body is RFC 8259
JSON (no NaN, no whitespace JSON does not define, such as `\\x0b`) of the declared schema.

The compiler knows only the JSON Schema keywords the document uses for requests; a keyword it
does not know is an error when the app is made (and in a unit test), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from supervisor.api.errors import CODES, error_body

QUERY = web.RequestKey("query", dict)
BODY = web.RequestKey("body", object)

_INTEGER = re.compile(r"-?[0-9]+")
_JSON_TYPES = ("application/json",)
_KNOWN_PARAM_KEYWORDS = frozenset({"type", "minimum", "maximum", "enum", "minLength", "pattern"})
_EMPTY_OBJECT = {"type": "object", "additionalProperties": False, "maxProperties": 0}


class SchemaNotSupported(ValueError):
    """The document uses something for a request that this validator cannot check."""


class Invalid(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Param:
    """One query parameter: its JSON Schema, compiled to a parser of the raw string."""

    name: str
    type: str  # "integer" or "string"
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[Any, ...] | None = None
    min_length: int | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, spec: Mapping[str, Any]) -> Param:
        schema = spec.get("schema", {})
        unknown = set(schema) - _KNOWN_PARAM_KEYWORDS
        if unknown or schema.get("type") not in ("integer", "string"):
            raise SchemaNotSupported(f"parameter {spec['name']}: {sorted(unknown) or schema}")
        pattern = schema.get("pattern")
        return cls(
            name=spec["name"],
            type=schema["type"],
            minimum=schema.get("minimum"),
            maximum=schema.get("maximum"),
            enum=tuple(schema["enum"]) if "enum" in schema else None,
            min_length=schema.get("minLength"),
            pattern=re.compile(pattern) if pattern is not None else None,
        )

    def parse(self, raw: str) -> int | str:
        field = f"query.{self.name}"
        value: int | str = raw
        if self.type == "integer":
            if not _INTEGER.fullmatch(raw):
                raise Invalid(field, f"must be an integer, got {raw!r}")
            value = int(raw)
            if self.minimum is not None and value < self.minimum:
                raise Invalid(field, f"must be at least {self.minimum}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise Invalid(field, f"must be at most {self.maximum}, got {value}")
        else:
            if self.min_length is not None and len(raw) < self.min_length:
                raise Invalid(field, f"must be at least {self.min_length} characters long")
            if self.pattern is not None and not self.pattern.search(raw):
                raise Invalid(field, f"must match {self.pattern.pattern}, got {raw!r}")
        if self.enum is not None and value not in self.enum:
            choices = ", ".join(map(str, self.enum))
            raise Invalid(field, f"must be one of {choices}, got {raw!r}")
        return value


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "object": (dict,), "integer": (int,),
}  # fmt: skip


@dataclass(frozen=True)
class Field:
    """One top-level key of a body: its JSON type, and for a string its length and pattern.
    What an `object` field holds is the handler's to check (a unit is checked by the unit
    parser, which names the key)."""

    type: str
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    enum: tuple[str, ...] | None = None

    @classmethod
    def compile(cls, name: str, schema: Mapping[str, Any]) -> Field:
        kind = schema.get("type")
        known = {"type", "maxLength", "pattern", "enum", "description", "example"}
        if kind not in _FIELD_TYPES or set(schema) - known:
            raise SchemaNotSupported(f"body field {name}: {schema}")
        pattern, enum = schema.get("pattern"), schema.get("enum")
        return cls(kind, schema.get("maxLength"), re.compile(pattern) if pattern else None,
                   tuple(enum) if enum else None)  # fmt: skip

    def check(self, name: str, value: object) -> None:
        if not isinstance(value, _FIELD_TYPES[self.type]) or (
            self.type == "integer" and isinstance(value, bool)
        ):
            raise Invalid(f"body.{name}", f"must be a json {self.type}")
        if isinstance(value, str):
            if self.max_length is not None and len(value) > self.max_length:
                raise Invalid(f"body.{name}", f"longer than {self.max_length} characters")
            if self.pattern is not None and not self.pattern.search(value):
                raise Invalid(f"body.{name}", f"must match {self.pattern.pattern}")
            if self.enum is not None and value not in self.enum:
                raise Invalid(f"body.{name}", f"must be one of {', '.join(self.enum)}")


@dataclass(frozen=True)
class Body:
    """A JSON request body: an empty object (actions take no parameters), or an object of
    named fields (`Field`), some required, no others; anything else in the document is
    refused up front."""

    required: bool
    fields: Mapping[str, Field] = dataclasses.field(default_factory=dict)
    needed: frozenset[str] = frozenset()

    @classmethod
    def compile(cls, spec: Mapping[str, Any]) -> Body:
        content = spec.get("content", {})
        if set(content) != set(_JSON_TYPES):
            raise SchemaNotSupported(f"request body media types {sorted(content)}")
        schema = content["application/json"]["schema"]
        if schema == _EMPTY_OBJECT:
            return cls(bool(spec.get("required")))
        if (
            schema.get("type") != "object"
            or schema.get("additionalProperties") is not False
            or set(schema) - {"type", "additionalProperties", "properties", "required"}
        ):
            raise SchemaNotSupported(f"request body schema {schema}")
        properties = schema.get("properties", {})
        fields = {name: Field.compile(name, value) for name, value in properties.items()}
        return cls(bool(spec.get("required")), fields, frozenset(schema.get("required", ())))

    def parse(self, request: web.Request, raw: bytes) -> dict[str, Any] | None:
        if not raw:
            if self.required:
                raise Invalid("body", "a json object is required")
            return None
        # No Content-Type at all is taken as JSON (raw clients omit it); a different one is not.
        if "Content-Type" in request.headers and request.content_type not in _JSON_TYPES:
            raise Invalid(
                "body", f"send Content-Type: application/json, not {request.content_type}", 415
            )
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid("body", f"invalid json: {_lower_first(str(exc))}") from None
        if not isinstance(value, dict):
            raise Invalid("body", f"must be a json object, got {type(value).__name__}")
        if not self.fields:
            if value:
                raise Invalid("body", f"takes no keys, got {', '.join(sorted(value))}")
            return value
        for name in sorted(value):
            field = self.fields.get(name)
            if field is None:
                raise Invalid(f"body.{name}", "unknown key for this operation")
            field.check(name, value[name])
        for name in sorted(self.needed - value.keys()):
            raise Invalid(f"body.{name}", "is required")
        return value


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _no_constant(name: str) -> object:
    raise ValueError(f"the constant {name} is not json")


@dataclass(frozen=True)
class Operation:
    query: Mapping[str, Param]
    body: Body | None

    @classmethod
    def compile(cls, operation: Mapping[str, Any]) -> Operation:
        query = {}
        for spec in operation.get("parameters", []):
            if spec["in"] == "query":
                query[spec["name"]] = Param.compile(spec)
            elif spec["in"] == "path":
                Param.compile(spec)  # the router matches it; still refuse what we cannot check
            else:
                raise SchemaNotSupported(f"parameter {spec['name']} in {spec['in']}")
        body = operation.get("requestBody")
        return cls(query, Body.compile(body) if body is not None else None)

    async def check(self, request: web.Request) -> None:
        seen: dict[str, int | str] = {}
        for name, raw in request.query.items():
            param = self.query.get(name)
            if param is None:
                raise Invalid(f"query.{name}", "unknown query parameter for this operation")
            if name in seen:
                raise Invalid(f"query.{name}", "given more than once")
            seen[name] = param.parse(raw)
        request[QUERY] = seen
        raw_body = await request.read() if request.body_exists else b""  # capped: 413
        if self.body is None:
            if raw_body:
                raise Invalid("body", "this operation takes no body")
            return
        request[BODY] = self.body.parse(request, raw_body)


Operations = Mapping[tuple[str, str], Operation]


def compile_document(document: Mapping[str, Any]) -> Operations:
    """(METHOD, path template) -> the operation's checks, for every operation in `document`."""
    compiled: dict[tuple[str, str], Operation] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            compiled[(method.upper(), path)] = Operation.compile(operation)
    return compiled


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(document: Mapping[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    operations = compile_document(document)

    @web.middleware
    async def validate(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None:  # the router's own 404 or 405: nothing to validate
            return await handler(request)
        method = "GET" if request.method == "HEAD" else request.method
        operation = operations.get((method, resource.canonical))
        if operation is None:
            raise LookupError(f"{method} {resource.canonical} is served but not documented")
        try:
            await operation.check(request)
        except Invalid as exc:
            body = {**error_body(str(exc), CODES[exc.status]), "field": exc.field}
            return web.json_response(body, status=exc.status)
        return await handler(request)

    return validate
