"""The OpenAPI 3.1 document, generated from the route table and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

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


def build_openapi(
    routes: list[Route], title: str, version: str, *, auth_optional: bool = False
) -> dict[str, Any]:
    """`auth_optional` describes the local stack, where a request without a token acts as
    the configured development identity."""
    models: set[type[BaseModel]] = {ErrorBody}
    for route in routes:
        models.update(m for m in (route.body, route.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schemas = models_json_schema(
        [(m, "validation" if _is_input(m, routes) else "serialization") for m in ordered],
        ref_template=REF,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, auth_optional)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "firebase": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "Firebase ID token",
                }
            },
        },
    }


def _is_input(model: type[BaseModel], routes: list[Route]) -> bool:
    return any(route.body is model for route in routes)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(route: Route, auth_optional: bool) -> dict[str, Any]:
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
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
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
