"""Every bad input gets the right 4xx in the one error shape, never a 500."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Api


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert body["error"]["message"]
    return body["error"]


def test_malformed_json_is_a_bad_request(api: Api) -> None:
    response = api.call("POST", "/manifests", data="{oops", content_type="application/json")
    assert_error(response, 400, "bad_request")


def test_a_json_array_instead_of_an_object_is_refused(api: Api) -> None:
    assert_error(api.call("POST", "/manifests", json=["x"]), 422, "validation_failed")


def test_unknown_fields_are_named_in_the_error(api: Api) -> None:
    error = assert_error(
        api.call("POST", "/manifests", json={"name": "x", "colour": "red"}),
        422,
        "validation_failed",
    )
    assert error["details"][0]["loc"] == ["body", "colour"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5},
        {"name": ""},
        {"name": "x", "category": "MUSICALS"},
        {"name": "x", "tags": "a"},
        {},
    ],
)
def test_wrong_types_and_values_are_validation_errors(api: Api, body: dict) -> None:  # type: ignore[type-arg]
    assert_error(api.call("POST", "/manifests", json=body), 422, "validation_failed")


def test_a_bad_asset_type_lists_the_allowed_ones(api: Api) -> None:
    manifest = api.manifest()
    error = assert_error(
        api.call(
            "POST",
            f"/manifests/{manifest['id']}/assets",
            json={"asset_type": "DRAGON", "name": "x"},
        ),
        422,
        "validation_failed",
    )
    assert "CHARACTER" in error["message"]


def test_an_oversized_body_is_refused_before_parsing(api: Api) -> None:
    response = api.call("POST", "/manifests", json={"name": "x", "description": "d" * 100_000})
    assert_error(response, 413, "payload_too_large")


def test_a_body_that_is_not_json_is_an_unsupported_media_type(api: Api) -> None:
    response = api.call(
        "POST", "/manifests", data="name=x", content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_ids_and_paths_are_not_found(api: Api) -> None:
    assert_error(api.call("GET", "/manifests/nope"), 404, "not_found")
    assert_error(api.call("GET", "/manifests/nope/assets/nada"), 404, "not_found")
    assert_error(api.call("GET", "/no/such/thing"), 404, "not_found")


def test_a_wrong_method_is_not_allowed(api: Api) -> None:
    assert_error(api.call("PUT", "/manifests"), 405, "method_not_allowed")


def test_bad_query_parameters_are_validation_errors(api: Api) -> None:
    assert_error(api.call("GET", "/manifests?sort=colour"), 422, "validation_failed")
    assert_error(api.call("GET", "/manifests?limit=0"), 422, "validation_failed")
    assert_error(api.call("GET", "/manifests?limit=ten"), 422, "validation_failed")
    assert_error(api.call("GET", "/manifests?colour=red"), 422, "validation_failed")
    assert_error(api.call("GET", "/manifests?cursor=garbage"), 400, "bad_request")


def test_a_malformed_authorization_header_is_unauthenticated(api: Api) -> None:
    response = api.call("GET", "/manifests", headers={"Authorization": "Token abc"})
    assert_error(response, 401, "unauthenticated")


def test_the_openapi_document_describes_every_route(api: Api) -> None:
    document = api.ok("GET", "/openapi.json")
    assert document["openapi"].startswith("3.")
    assert "post" in document["paths"]["/manifests/{manifest_id}/assets"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_cors_preflight_answers_configured_origins_only(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.api.app import api_app

    monkeypatch.setattr(api_app()._settings, "cors_origins", ["https://studio.example"])
    allowed = api.call("OPTIONS", "/manifests", headers={"Origin": "https://studio.example"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    other = api.call("OPTIONS", "/manifests", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
