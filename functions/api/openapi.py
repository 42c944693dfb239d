"""The OpenAPI 3.1 document, generated from the route table and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from functions.http import Route
from shared.models.views import ErrorBody

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_TYPED_PARAM = re.compile(r"<(?:([a-z]+):)?([a-z_]+)>")
_REASONS = {
    400: "The request cannot be read (malformed JSON, bad cursor).",
    401: "No valid identity.",
    404: "No such resource, or it is not yours.",
    405: "Method not allowed.",
    409: "The resource's state forbids this now.",
    413: "The body or file is too large.",
    415: "Wrong content type.",
    422: "The input breaks a rule; `details` says where.",
}


class _OpenApiSchemas(GenerateJsonSchema):
    """pydantic's generator, less one contradiction: an optional field whose null the schema
    hides (`X | SkipJsonSchema[None] = None`: leave it out to leave it unchanged) would say
    `default: null` beside a type that admits no null, which OpenAPI validators refuse. Such
    a field is simply not required; its default is left unsaid."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        rest = {key: value for key, value in json_schema.items() if key != "default"}
        if "default" in json_schema and json_schema["default"] is None and not _admits_null(rest):
            del json_schema["default"]
        return json_schema


def _admits_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return schema is True
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in schema.get("enum", ()) or ("const" in schema and schema["const"] is None):
        return True
    return any(_admits_null(branch) for key in ("anyOf", "oneOf") for branch in schema.get(key, ()))


def build_openapi(
    routes: list[Route], title: str, version: str, *, auth_optional: bool = False
) -> dict[str, Any]:
    """`auth_optional` describes the local stack, where a request without a token acts as
    the configured development identity."""
    # Query models go through the same generator as bodies and responses: their enums and
    # nested models land in components/schemas, under the names every other $ref uses.
    models: set[type[BaseModel]] = {ErrorBody}
    for route in routes:
        models.update(m for m in (route.body, route.response, route.query) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    keyed, top = models_json_schema(
        [(m, "validation" if _is_input(m, routes) else "serialization") for m in ordered],
        ref_template=REF,
        schema_generator=_OpenApiSchemas,
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        query = (
            None if route.query is None else _resolve(keyed[(route.query, "validation")], schemas)
        )
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, query, auth_optional)
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "firebase": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "Firebase ID token",
                }
            },
        },
    }
    missing = unresolved_refs(document)
    if missing:
        raise ValueError(f"the OpenAPI document refers to what it lacks: {sorted(missing)}")
    return document


def unresolved_refs(document: dict[str, Any]) -> set[str]:
    """Every local `$ref` anywhere in the document that names no part of it."""
    missing: set[str] = set()
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not _points_somewhere(document, ref):
                missing.add(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return missing


def _points_somewhere(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#"):
        return False  # the document is self-contained: nothing outside it is referred to
    node: Any = document
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A model's schema as models_json_schema keys it (a $ref into components), followed."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF.format(model="")):
        resolved: dict[str, Any] = schemas[ref.rsplit("/", 1)[-1]]
        return resolved
    return schema


def _is_input(model: type[BaseModel], routes: list[Route]) -> bool:
    return any(model in (route.body, route.query) for route in routes)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(route: Route, query: dict[str, Any] | None, auth_optional: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.handler.__module__.rsplit('.', 1)[-1]}"
        f"_{route.handler.__name__.strip('_')}",
        "tags": [route.tag],
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 0}
                if converter == "int"
                else {"type": "string"},
            }
            for converter, name in _TYPED_PARAM.findall(route.path)
        ],
    }
    if query is not None:
        required = set(query.get("required", []))
        for name, prop in query["properties"].items():
            operation["parameters"].append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    elif route.raw_body == "multipart/form-data":
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    success: dict[str, Any] = {"description": "Success"}
    if route.response is not None:
        success["content"] = {"application/json": {"schema": _ref(route.response)}}
    responses: dict[str, Any] = {str(route.status): success}
    codes = set(route.errors) | ({401} if route.authenticated else set())
    if route.raw_body is None and route.body is None:
        codes.discard(415)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _REASONS.get(code, "Error"),
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    operation["responses"] = responses
    if route.authenticated:
        operation["security"] = [{"firebase": []}, {}] if auth_optional else [{"firebase": []}]
    return operation
