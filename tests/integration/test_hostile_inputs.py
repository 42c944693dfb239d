"""Hostile requests answer the one error shape with the right 4xx, never a 500: a table of
request → (status, error code).

Paths may name `{m}` and `{a}`: a manifest and an asset of the calling user, made for the case.
Other ids are well-shaped (20 url-safe characters; checkpoints `r1-keyframes`) but name
nothing: the refusals in this table come before any read.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Api

NESTED = '{"name": "x", "tags": ' + "[" * 1000 + "]" * 1000 + "}"
HUGE_INTEGER = '{"name": "x", "sort_order": ' + "9" * 4301 + "}"
JSON = {"Content-Type": "application/json"}

BOUNDARY = "hostile-boundary"
FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(content: bytes, name: str = "file", filename: str = "photo.jpg") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


OVERSIZED_FORM = multipart(b"\xff" * (10 * 1024 * 1024 + 512 * 1024))
"""10.5 MB of image: over FRAMEFORK_STORAGE__MAX_UPLOAD_BYTES (10 MB by default)."""
OVERSIZED_JSON = ('{"name": "' + "x" * (80 * 1024) + '"}').encode()
"""Over FRAMEFORK_API__MAX_BODY_BYTES (64 KiB by default)."""
CHUNKED = {"Transfer-Encoding": "chunked"}
TERMINATED = {"environ_overrides": {"wsgi.input_terminated": True}}
"""A chunked body has no length: the WSGI server ends its stream (gunicorn and werkzeug's
server both say so in the environ), and only then is it read."""

P = "AAAAAAAAAAAAAAAAAAAA"
ASSET = "/manifests/{m}/assets/{a}"
KEYFRAME = f"/projects/{P}/checkpoints/r1-keyframes/scenes/0/keyframe"


def case(name: str, method: str, path: str, send: dict[str, Any], status: int, code: str) -> Any:
    return pytest.param(method, path, send, status, code, id=name)


CASES = [
    # ----- malformed and oversized JSON bodies -------------------------------------------------
    case("nested-1000", "POST", "/manifests", {"data": NESTED}, 400, "bad_request"),
    case(
        "nested-40",
        "POST",
        "/manifests",
        {"data": '{"name": "x", "tags": ' + "[" * 40 + "]" * 40 + "}"},
        400,
        "bad_request",
    ),
    case("huge-integer", "POST", "/manifests", {"data": HUGE_INTEGER}, 400, "bad_request"),
    case("nan", "POST", "/manifests", {"data": '{"name": NaN}'}, 400, "bad_request"),
    case("truncated-json", "POST", "/manifests", {"data": '{"name": '}, 400, "bad_request"),
    case("not-utf8", "POST", "/manifests", {"data": b'{"name": "\xff\xfe"}'}, 400, "bad_request"),
    case("json-array", "POST", "/manifests", {"data": '[{"name": "x"}]'}, 422, "validation_failed"),
    case("json-string", "POST", "/manifests", {"data": '"name"'}, 422, "validation_failed"),
    case(
        "body-over-limit",
        "POST",
        "/manifests",
        {"data": OVERSIZED_JSON},
        413,
        "payload_too_large",
    ),
    case(
        "chunked-body-over-limit",
        "POST",
        "/manifests",
        {"data": OVERSIZED_JSON, "headers": {**JSON, **CHUNKED}, **TERMINATED},
        413,
        "payload_too_large",
    ),
    case(
        "body-where-none-is-taken",
        "DELETE",
        f"/projects/{P}",
        {"data": '{"hard": true}'},
        422,
        "validation_failed",
    ),
    # ----- strings -------------------------------------------------------------------------------
    case(
        "nul-in-name",
        "POST",
        "/manifests",
        {"data": '{"name": "a\\u0000b"}'},
        422,
        "validation_failed",
    ),
    case(
        "nul-in-tag",
        "POST",
        "/manifests",
        {"data": '{"name": "x", "tags": ["\\u0000"]}'},
        422,
        "validation_failed",
    ),
    case(
        "lone-surrogate-in-name",
        "POST",
        "/manifests",
        {"data": '{"name": "a\\ud800b"}'},
        400,
        "bad_request",
    ),
    case(
        "lone-low-surrogate-in-tag",
        "POST",
        "/manifests",
        {"data": '{"name": "x", "tags": ["\\udfff"]}'},
        400,
        "bad_request",
    ),
    case(
        "name-only-spaces",
        "POST",
        "/manifests",
        {"data": '{"name": "   "}'},
        422,
        "validation_failed",
    ),
    # ----- content types -------------------------------------------------------------------------
    case(
        "text-plain",
        "POST",
        "/manifests",
        {"data": '{"name": "x"}', "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    case(
        "no-content-type",
        "POST",
        "/manifests",
        {"data": '{"name": "x"}', "headers": {}},
        415,
        "unsupported_media_type",
    ),
    case(
        "form-to-json-route",
        "POST",
        "/manifests",
        {"data": multipart(b"x"), "headers": FORM},
        415,
        "unsupported_media_type",
    ),
    case(
        "json-to-upload",
        "POST",
        f"{ASSET}/upload",
        {"data": '{"file": "x"}'},
        415,
        "unsupported_media_type",
    ),
    case(
        "form-without-file",
        "POST",
        f"{ASSET}/upload",
        {"data": multipart(b"x", name="photo"), "headers": FORM},
        400,
        "bad_request",
    ),
    # ----- uploads -------------------------------------------------------------------------------
    case(
        "upload-over-limit",
        "POST",
        f"{ASSET}/upload",
        {"data": OVERSIZED_FORM, "headers": FORM},
        413,
        "payload_too_large",
    ),
    case(
        "chunked-upload-over-limit",
        "POST",
        f"{ASSET}/upload",
        {"data": OVERSIZED_FORM, "headers": {**FORM, **CHUNKED}, **TERMINATED},
        413,
        "payload_too_large",
    ),
    case(
        "keyframe-over-limit",
        "POST",
        KEYFRAME,
        {"data": OVERSIZED_FORM, "headers": FORM},
        413,
        "payload_too_large",
    ),
    case(
        "chunked-keyframe-over-limit",
        "POST",
        KEYFRAME,
        {"data": OVERSIZED_FORM, "headers": {**FORM, **CHUNKED}, **TERMINATED},
        413,
        "payload_too_large",
    ),
    case(
        "upload-not-an-image",
        "POST",
        f"{ASSET}/upload",
        {"data": multipart(b"this is no image"), "headers": FORM},
        422,
        "upload_rejected",
    ),
    case(
        "upload-url-over-limit",
        "POST",
        f"{ASSET}/upload-url",
        {"json": {"content_type": "image/png", "size_bytes": 10 * 1024 * 1024 + 1}},
        413,
        "payload_too_large",
    ),
    # ----- strict integers (booleans, fractions and strings are no integers; 4.0 is 4, as JSON
    # Schema's "integer" says) -----------------------------------------------------------------
    case(
        "sort-order-false",
        "PATCH",
        ASSET,
        {"json": {"sort_order": False}},
        422,
        "validation_failed",
    ),
    case(
        "sort-order-string",
        "POST",
        "/manifests/{m}/assets",
        {"json": {"asset_type": "CHARACTER", "name": "x", "sort_order": "3"}},
        422,
        "validation_failed",
    ),
    case(
        "size-bytes-true",
        "POST",
        f"{ASSET}/upload-url",
        {"json": {"content_type": "image/png", "size_bytes": True}},
        422,
        "validation_failed",
    ),
    case(
        "clip-seconds-fraction",
        "POST",
        "/generate/estimate",
        {"json": {"prompt": "a cat", "clip_seconds": 4.5}},
        422,
        "validation_failed",
    ),
    case(
        "total-seconds-string",
        "POST",
        "/generate/estimate",
        {"json": {"prompt": "a cat", "total_seconds": "16"}},
        422,
        "validation_failed",
    ),
    case(
        "deleted-scene-true",
        "POST",
        f"/projects/{P}/forks/preview",
        {"json": {"deleted_scenes": [True]}},
        422,
        "validation_failed",
    ),
    case(
        "fork-upload-size-true",
        "POST",
        f"/projects/{P}/forks/preview",
        {
            "json": {
                "asset_changes": {
                    "new_uploads": [{"asset_type": "CHARACTER", "name": "x", "size_bytes": True}]
                }
            }
        },
        422,
        "validation_failed",
    ),
    case(
        "infinite-sort-order",
        "PATCH",
        ASSET,
        {"data": '{"sort_order": 1e999}'},
        422,
        "validation_failed",
    ),
    # ----- extra fields and bad enums ------------------------------------------------------------
    case(
        "extra-field",
        "POST",
        "/manifests",
        {"json": {"name": "x", "owner_uid": "someone"}},
        422,
        "validation_failed",
    ),
    case(
        "proto-field",
        "PATCH",
        ASSET,
        {"json": {"__proto__": {"admin": True}}},
        422,
        "validation_failed",
    ),
    case(
        "bad-category",
        "POST",
        "/manifests",
        {"json": {"name": "x", "category": "NOPE"}},
        422,
        "validation_failed",
    ),
    case(
        "bad-asset-type",
        "POST",
        "/manifests/{m}/assets",
        {"json": {"asset_type": "character ", "name": "x"}},
        422,
        "validation_failed",
    ),
    case(
        "bad-upload-type",
        "POST",
        f"{ASSET}/upload-url",
        {"json": {"content_type": "image/svg+xml", "size_bytes": 10}},
        422,
        "validation_failed",
    ),
    case("bad-status-filter", "GET", "/projects?status=NOPE", {}, 422, "validation_failed"),
    case("bad-sort", "GET", "/manifests?sort=__proto__", {}, 422, "validation_failed"),
    # ----- limits, cursors and query strings -----------------------------------------------------
    case("limit-zero", "GET", "/manifests?limit=0", {}, 422, "validation_failed"),
    case("limit-over-max", "GET", "/projects?limit=101", {}, 422, "validation_failed"),
    case("limit-not-a-number", "GET", "/manifests?limit=ten", {}, 422, "validation_failed"),
    case("limit-huge", "GET", "/manifests?limit=" + "9" * 5000, {}, 422, "validation_failed"),
    case("limit-twice", "GET", "/manifests?limit=1&limit=2", {}, 422, "validation_failed"),
    case("unknown-query", "GET", "/manifests?owner_uid=x", {}, 422, "validation_failed"),
    case("query-where-none-is-taken", "GET", f"{ASSET}?x=1", {}, 422, "validation_failed"),
    case("project-cursor", "GET", "/projects?cursor=zzz", {}, 400, "bad_request"),
    case("manifest-cursor", "GET", "/manifests?cursor=zzz", {}, 400, "bad_request"),
    case(
        "manifest-cursor-base64-junk",
        "GET",
        "/manifests?cursor=eyJ4IjogMX0",
        {},
        400,
        "bad_request",
    ),
    case("cursor-too-long", "GET", "/manifests?cursor=" + "a" * 3000, {}, 422, "validation_failed"),
    # ----- ids and paths -------------------------------------------------------------------------
    case("proto-id", "GET", "/projects/__proto__", {}, 404, "not_found"),
    case("constructor-id", "GET", "/manifests/constructor", {}, 404, "not_found"),
    case("tostring-id", "GET", "/jobs/toString", {}, 404, "not_found"),
    case("long-id", "GET", "/manifests/" + "a" * 300, {}, 404, "not_found"),
    case("nul-in-id", "GET", "/manifests/abc%00defghijklmnopq", {}, 404, "not_found"),
    case("bad-checkpoint-id", "GET", f"/projects/{P}/checkpoints/nope", {}, 404, "not_found"),
    case("traversal-encoded", "GET", "/manifests/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),
    case("traversal-dots", "GET", "/manifests/%2e%2e/%2e%2e/etc/passwd", {}, 404, "not_found"),
    case(
        "traversal-in-asset",
        "GET",
        "/manifests/{m}/assets/..%2F..%2F..%2Fjobs",
        {},
        404,
        "not_found",
    ),
    case(
        "negative-scene",
        "GET",
        f"/projects/{P}/checkpoints/r1-keyframes/scenes/-1/clip",
        {},
        404,
        "not_found",
    ),
    case("no-such-route", "GET", "/admin", {}, 404, "not_found"),
    case("wrong-method", "PUT", "/manifests", {"json": {"name": "x"}}, 405, "method_not_allowed"),
]


def _resolve(api: Api, path: str) -> str:
    if "{m}" not in path:
        return path
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    return path.format(m=manifest["id"], a=asset["id"])


@pytest.mark.parametrize(("method", "path", "send", "status", "code"), CASES)
def test_a_hostile_request_gets_its_status_and_the_error_shape(
    api: Api, method: str, path: str, send: dict[str, Any], status: int, code: str
) -> None:
    send = dict(send)
    headers = send.pop("headers", JSON if "data" in send else {})
    response = api.call(method, _resolve(api, path), headers=headers, **send)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    assert error["message"]
    assert isinstance(error["details"], list)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30
