"""The served OpenAPI document is a valid OpenAPI 3.1 document (by openapi-spec-validator),
every `$ref` in it resolves, and it describes every route of the table, once each."""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from functions.api.app import API_TITLE, API_VERSION, ROUTES
from functions.api.openapi import build_openapi, unresolved_refs
from tests.integration.conftest import Api


def _documents() -> dict[str, dict[str, Any]]:
    return {
        "production": build_openapi(ROUTES, API_TITLE, API_VERSION),
        "development": build_openapi(ROUTES, API_TITLE, API_VERSION, auth_optional=True),
    }


@pytest.fixture(params=["production", "development"])
def document(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _documents()[request.param]


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_refs(item))
    return found


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} resolves to nothing"
        node = node[part]
    return node


def _closure(document: dict[str, Any], node: Any) -> set[str]:
    """Every $ref reachable from node, following each one: all must resolve."""
    seen: set[str] = set()
    pending = _refs(node)
    while pending:
        ref = pending.pop()
        if ref not in seen:
            seen.add(ref)
            pending.extend(_refs(_resolve(document, ref)))
    return seen


def test_the_served_document_is_valid_openapi_3_1(api: Api) -> None:
    served = api.ok("GET", "/openapi.json")
    assert served["openapi"].startswith("3.1")
    validate(served, cls=OpenAPIV31SpecValidator)
    assert not unresolved_refs(served)


def test_the_document_is_valid_openapi_3_1_in_either_auth_mode(document: dict[str, Any]) -> None:
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


def test_every_ref_in_the_document_resolves(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert refs
    for ref in refs:
        _resolve(document, ref)
    # Query parameters' enums among them: they used to be left out of components.
    assert {"ManifestSort", "SortOrder", "ProjectStatus"} <= set(document["components"]["schemas"])


def test_every_route_is_an_operation_with_resolvable_schemas(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for route in ROUTES:
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route.path)
        where = f"{route.method} {path}"
        operation = document["paths"].get(path, {}).get(route.method.lower())
        assert operation is not None, f"{where} is missing from the document"
        _closure(document, operation)
        assert str(route.status) in operation["responses"], where
        if route.body is not None:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _resolve(document, body["$ref"]) is schemas[route.body.__name__], where
        if route.response is not None:
            answer = operation["responses"][str(route.status)]["content"]["application/json"]
            assert _resolve(document, answer["schema"]["$ref"]) is schemas[route.response.__name__]
        declared = {
            parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "path"
        }
        assert declared == set(re.findall(r"{([a-z_]+)}", path)), where
        if route.query is not None:
            query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert query == set(route.query.model_fields), where
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                error = response["content"]["application/json"]["schema"]
                assert _resolve(document, error["$ref"]) is schemas["ErrorBody"], where
    operations = sum(len(item) for item in document["paths"].values())
    assert operations == len(ROUTES), "the document has operations the route table lacks"


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = Counter(
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    )
    assert [name for name, count in ids.items() if count > 1] == []


def test_a_default_is_always_a_value_its_schema_admits(document: dict[str, Any]) -> None:
    # `X | SkipJsonSchema[None] = None` fields hide their null: no `default: null` beside them.
    for name, schema in document["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if "default" in prop and prop["default"] is None:
                assert "anyOf" in prop or prop.get("type") == "null", f"{name}.{field}"


def test_a_dangling_ref_is_found_and_refused_by_the_validator() -> None:
    broken = copy.deepcopy(_documents()["production"])
    manifests = broken["paths"]["/manifests"]["get"]
    manifests["parameters"][0]["schema"] = {"$ref": "#/components/schemas/Nowhere"}
    assert unresolved_refs(broken) == {"#/components/schemas/Nowhere"}
    with pytest.raises(Exception, match="Nowhere"):
        validate(broken, cls=OpenAPIV31SpecValidator)
