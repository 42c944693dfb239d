"""The whole local stack as separate processes over HTTP: the api function, the storage
emulator, the event bridge standing in for Eventarc, and the on_upload function."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.e2e


def call(stack: Any, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = requests.request(method, f"{stack.api_url}{path}", timeout=15, **kwargs)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


def settled_asset(stack: Any, path: str, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        asset: dict[str, Any] = call(stack, "GET", path, 200)
        if asset["upload"]["state"] in ("ready", "failed"):
            return asset
        time.sleep(0.1)
    raise AssertionError(f"{path} was not processed within {seconds}s")


def upload(stack: Any, path: str, data: bytes, content_type: str) -> dict[str, Any]:
    ticket = call(stack, "POST", f"{path}/upload-url", 201,
                  json={"content_type": content_type, "size_bytes": len(data)})  # fmt: skip
    put = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=15)
    assert put.status_code == 200, put.text
    return settled_asset(stack, path)


def test_a_photo_put_through_a_signed_url_is_attached_by_the_trigger(local_stack: Any) -> None:
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "e2e"})
    asset = call(local_stack, "POST", f"/manifests/{manifest['id']}/assets", 201,
                 json={"asset_type": "CHARACTER", "name": "hero"})  # fmt: skip
    path = f"/manifests/{manifest['id']}/assets/{asset['id']}"
    out = io.BytesIO()
    Image.new("RGB", (900, 600), (20, 120, 220)).save(out, "JPEG")

    attached = upload(local_stack, path, out.getvalue(), "image/jpeg")

    assert attached["upload"]["state"] == "ready"
    assert (attached["image"]["width"], attached["image"]["height"]) == (900, 600)
    redirect = requests.get(
        f"{local_stack.api_url}{path}/thumbnail", allow_redirects=False, timeout=15
    )
    assert redirect.status_code == 302
    thumbnail = Image.open(
        io.BytesIO(requests.get(redirect.headers["Location"], timeout=15).content)
    )
    assert thumbnail.size == (256, 171)
    detail = call(local_stack, "GET", f"/manifests/{manifest['id']}", 200)
    assert detail["manifest"]["version"] == 3  # created, asset added, image attached


def test_a_file_that_is_not_an_image_fails_the_upload_with_a_reason(local_stack: Any) -> None:
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "e2e bad"})
    asset = call(local_stack, "POST", f"/manifests/{manifest['id']}/assets", 201,
                 json={"asset_type": "PROP", "name": "mystery"})  # fmt: skip
    path = f"/manifests/{manifest['id']}/assets/{asset['id']}"

    failed = upload(local_stack, path, b"%PDF-1.7 not a picture", "image/png")

    assert failed["upload"]["state"] == "failed"
    assert "not a readable image" in failed["upload"]["error"]
    assert failed["image"] is None
