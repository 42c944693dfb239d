"""Manifesting through the whole stack: the api enqueues a Cloud Task, the Tasks emulator
delivers it over HTTP to the model service (BentoML), which runs the job with the offline
models and writes progress to Firestore, where the client watches it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e
PHOTO = Path(".local/sample-photos/zidane.jpg")


def call(stack: Any, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = requests.request(method, f"{stack.api_url}{path}", timeout=30, **kwargs)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


def test_processing_runs_through_cloud_tasks_and_the_model_service(local_stack: Any) -> None:
    if not PHOTO.exists():
        pytest.skip("sample photos missing: run ./scripts/bootstrap")
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "e2e cast"})
    asset = call(local_stack, "POST", f"/manifests/{manifest['id']}/assets", 201,
                 json={"asset_type": "CHARACTER", "name": "touchline"})  # fmt: skip
    with PHOTO.open("rb") as handle:
        call(local_stack, "POST", f"/manifests/{manifest['id']}/assets/{asset['id']}/upload", 200,
             files={"file": ("zidane.jpg", handle, "image/jpeg")})  # fmt: skip

    job = call(local_stack, "POST", f"/manifests/{manifest['id']}/process", 202)
    steps_seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = call(local_stack, "GET", f"/jobs/{job['id']}", 200)
        steps_seen.add(job["step"])
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)

    assert job["status"] == "succeeded", job
    assert job["models"]["detector"] == "yolov3-tiny-darknet"
    detail = call(local_stack, "GET", f"/manifests/{manifest['id']}", 200)
    assert detail["manifest"]["status"] == "READY"
    people = [a for a in detail["assets"] if a["detection_class"] == "person"]
    assert len(people) >= 2
    assert all(a["reverse_prompt"] for a in detail["assets"])
    progress = call(local_stack, "GET", f"/manifests/{manifest['id']}/progress", 200)
    assert progress["id"] == job["id"]
