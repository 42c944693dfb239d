"""Hostile requests answer the one error shape with the right 4xx, never a 500: a table of
request → (status, error code)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Api

NESTED = '{"name": "x", "tags": ' + "[" * 1000 + "]" * 1000 + "}"
HUGE_INTEGER = '{"name": "x", "sort_order": ' + "9" * 4301 + "}"
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/manifests", {"data": NESTED}, 400, "bad_request"),
    (
        "POST",
        "/manifests",
        {"data": '{"name": "x", "tags": ' + "[" * 40 + "]" * 40 + "}"},
        400,
        "bad_request",
    ),
    ("POST", "/manifests", {"data": HUGE_INTEGER}, 400, "bad_request"),
    ("POST", "/manifests", {"data": '{"name": NaN}'}, 400, "bad_request"),
    ("GET", "/projects/__proto__", {}, 404, "not_found"),
    ("GET", "/manifests/constructor", {}, 404, "not_found"),
    ("GET", "/jobs/toString", {}, 404, "not_found"),
    ("GET", "/manifests/" + "a" * 300, {}, 404, "not_found"),
    ("GET", "/manifests/abc%00defghijklmnopq", {}, 404, "not_found"),
    ("GET", "/projects/AAAAAAAAAAAAAAAAAAAA/checkpoints/nope", {}, 404, "not_found"),
    ("GET", "/projects?cursor=zzz", {}, 400, "bad_request"),
    ("GET", "/manifests?cursor=zzz", {}, 400, "bad_request"),
]


@pytest.mark.parametrize(("method", "path", "send", "status", "code"), CASES)
def test_a_hostile_request_gets_its_status_and_the_error_shape(
    api: Api, method: str, path: str, send: dict[str, Any], status: int, code: str
) -> None:
    headers = {"Content-Type": "application/json"} if "data" in send else {}
    response = api.call(method, path, headers=headers, **send)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    assert error["message"]
