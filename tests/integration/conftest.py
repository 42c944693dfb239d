"""Integration tier: the functions in-process (functions-framework's own app) against the
emulators, which are shared by the whole session and reset before each test."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image


@dataclass
class Api:
    """The api function's test client, with the identity to act as."""

    client: Any

    def call(self, method: str, path: str, *, user: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer dev:{user}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def manifest(self, name: str = "Cast", **fields: Any) -> dict[str, Any]:
        return self.ok("POST", "/manifests", 201, json={"name": name, **fields})

    def asset(self, manifest_id: str, asset_type: str = "CHARACTER", name: str = "Hero") -> Any:
        return self.ok(
            "POST",
            f"/manifests/{manifest_id}/assets",
            201,
            json={"asset_type": asset_type, "name": name},
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FRAMEFORK_EXACT_FIRESTORE") == "1":
        return
    skip = pytest.mark.skip(
        reason="needs exact Firestore semantics: set FRAMEFORK_EXACT_FIRESTORE=1 with "
        "FIRESTORE_EMULATOR_HOST pointing at the official emulator or real Firestore"
    )
    for item in items:
        if item.get_closest_marker("exact_firestore"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _apps(emulators: Any) -> dict[str, Any]:
    from functions_framework import create_app

    return {
        "api": create_app("api", "functions/main.py"),
        "on_upload": create_app("on_upload", "functions/main.py", "cloudevent"),
        "sweep": create_app("sweep", "functions/main.py"),
    }


@pytest.fixture
def api(_apps: dict[str, Any], clean_emulators: Any) -> Api:
    return Api(_apps["api"].test_client())


@pytest.fixture
def sweep(_apps: dict[str, Any], clean_emulators: Any) -> Callable[[], dict[str, int]]:
    """One run of the sweep function, as Cloud Scheduler makes it; answers its report."""

    def run() -> dict[str, int]:
        response = _apps["sweep"].test_client().post("/")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()  # type: ignore[no-any-return]

    return run


@dataclass
class Events:
    client: Any

    def finalized(self, bucket: str, name: str, generation: str, size: int) -> Any:
        """Posts a storage finalize CloudEvent in binary mode, as Eventarc delivers it."""
        return self.client.post(
            "/",
            json={
                "bucket": bucket,
                "name": name,
                "generation": generation,
                "size": str(size),
                "contentType": "application/octet-stream",
            },
            headers={
                "ce-id": str(uuid.uuid4()),
                "ce-specversion": "1.0",
                "ce-type": "google.cloud.storage.object.v1.finalized",
                "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                "ce-subject": f"objects/{name}",
            },
        )


@pytest.fixture
def events(_apps: dict[str, Any], clean_emulators: Any) -> Events:
    return Events(_apps["on_upload"].test_client())


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (320, 240), colour: Any = (200, 40, 40)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def settings() -> Iterator[Any]:
    from shared.settings import get_settings

    yield get_settings()
