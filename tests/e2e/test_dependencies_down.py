"""A dependency that stops answering: every kind of API route answers 503 in the error shape,
with Retry-After, within the deadline (dependencies.deadline_s, 5 s by default), and the API
recovers by itself once the service answers again. The emulators are stopped with SIGSTOP:
their ports still accept connections and nothing answers, the worst case for a client."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.e2e

DEADLINE_S = 5.0  # the default of FRAMEFORK_DEPENDENCIES__DEADLINE_S, which the stack keeps
# One call may run out its deadline, then the revision check after an uncertain commit
# (shared/repositories/revisions.py) its own: twice the deadline, and a loaded machine's slack.
BOUND_S = 2 * DEADLINE_S + 3
CONCURRENT = 6  # fewer than the api's request threads (4 per core), so none waits in a queue
SOME_ID = "A" * 20  # of the shape the API issues: only Firestore can say it names nothing


def call(stack: Any, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = requests.request(method, f"{stack.api_url}{path}", timeout=30, **kwargs)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 140, 90)).save(out, "JPEG")
    return out.getvalue()


def timed(stack: Any, method: str, path: str, **kwargs: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, f"{stack.api_url}{path}", timeout=60, **kwargs)
    return response, time.monotonic() - started


def assert_unavailable(response: requests.Response, took: float, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.json()["error"]["code"] == "unavailable", what
    assert response.json()["error"]["status"] == 503, what
    assert int(response.headers["Retry-After"]) > 0, what
    assert took < BOUND_S, f"{what} took {took:.1f}s"


def test_firestore_down_every_kind_of_route_answers_503_quickly_then_recovers(
    local_stack: Any,
) -> None:
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "before the outage"})
    m = manifest["id"]
    asset = call(local_stack, "POST", f"/manifests/{m}/assets", 201,
                 json={"asset_type": "CHARACTER", "name": "hero"})  # fmt: skip
    a = asset["id"]
    p = SOME_ID
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/manifests", {}),
        ("POST", "/manifests", {"json": {"name": "during the outage"}}),
        ("GET", f"/manifests/{m}", {}),
        ("PATCH", f"/manifests/{m}", {"json": {"description": "changed"}}),
        ("DELETE", f"/manifests/{SOME_ID}", {}),
        ("POST", f"/manifests/{m}/duplicate", {"json": {}}),
        ("POST", f"/manifests/{m}/assets", {"json": {"asset_type": "OBJECT", "name": "cup"}}),
        ("GET", f"/manifests/{m}/assets", {}),
        ("PATCH", f"/manifests/{m}/assets/{a}", {"json": {"name": "heroine"}}),
        ("POST", f"/manifests/{m}/assets/{a}/upload-url",
         {"json": {"content_type": "image/jpeg", "size_bytes": 1000}}),
        ("POST", f"/manifests/{m}/assets/{a}/upload",
         {"files": {"file": ("a.jpg", jpeg(), "image/jpeg")}}),
        ("GET", f"/manifests/{m}/assets/{a}/thumbnail", {"allow_redirects": False}),
        ("POST", f"/manifests/{m}/process", {"json": {}}),
        ("GET", f"/manifests/{m}/progress", {}),
        ("GET", f"/jobs/{SOME_ID}", {}),
        ("POST", "/generate", {"json": {"prompt": "a boat", "clip_seconds": 2,
                                        "total_seconds": 4}}),
        ("GET", "/projects", {}),
        ("GET", f"/projects/{p}", {}),
        ("POST", f"/projects/{p}/resume", {"json": {}}),
        ("GET", f"/projects/{p}/checkpoints", {}),
        ("GET", f"/projects/{p}/checkpoints/r1-storyboard/plan", {}),
        ("POST", f"/projects/{p}/checkpoints/r1-storyboard/continue", {"json": {}}),
        ("POST", f"/projects/{p}/forks/preview", {"json": {}}),
    ]  # fmt: skip

    with local_stack.paused("firestore"), ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda r: timed(local_stack, r[0], r[1], **r[2]), routes))
        health = requests.get(f"{local_stack.api_url}/healthz", timeout=5)

    for (method, path, _), (response, took) in zip(routes, answers, strict=True):
        assert_unavailable(response, took, f"{method} {path}")
    assert health.status_code == 200  # what needs no dependency still answers
    slowest = max(took for _, took in answers)
    print(f"\nFirestore stopped: {len(routes)} routes answered 503, the slowest in {slowest:.1f}s")

    # Recovered by itself, and what was written before the outage is intact.
    assert call(local_stack, "GET", f"/manifests/{m}", 200)["manifest"]["name"] == (
        "before the outage"
    )
    call(local_stack, "POST", "/manifests", 201, json={"name": "after the outage"})


def test_storage_down_an_upload_answers_503_and_writes_nothing(local_stack: Any) -> None:
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "storage outage"})
    path = f"/manifests/{manifest['id']}/assets"
    asset = call(local_stack, "POST", path, 201, json={"asset_type": "OBJECT", "name": "cup"})
    upload = f"{path}/{asset['id']}/upload"

    with local_stack.paused("storage"):
        response, took = timed(local_stack, "POST", upload,
                               files={"file": ("a.jpg", jpeg(), "image/jpeg")})  # fmt: skip
    assert_unavailable(response, took, f"POST {upload}")

    assert call(local_stack, "GET", f"{path}/{asset['id']}", 200)["image"] is None
    call(local_stack, "POST", upload, 200, files={"file": ("a.jpg", jpeg(), "image/jpeg")})
    assert call(local_stack, "GET", f"{path}/{asset['id']}", 200)["image"]["width"] == 640


def test_tasks_down_processing_answers_503_and_a_retry_starts_the_same_job(
    local_stack: Any,
) -> None:
    manifest = call(local_stack, "POST", "/manifests", 201, json={"name": "tasks outage"})
    m = manifest["id"]
    asset = call(local_stack, "POST", f"/manifests/{m}/assets", 201,
                 json={"asset_type": "OBJECT", "name": "cup"})  # fmt: skip
    call(local_stack, "POST", f"/manifests/{m}/assets/{asset['id']}/upload", 200,
         files={"file": ("a.jpg", jpeg(), "image/jpeg")})  # fmt: skip

    with local_stack.paused("tasks"):
        response, took = timed(local_stack, "POST", f"/manifests/{m}/process", json={})
    assert_unavailable(response, took, f"POST /manifests/{m}/process")

    # The retry the 503 asks for finds the job the failed call recorded and queues it again:
    # one job, run to the end.
    job = call(local_stack, "POST", f"/manifests/{m}/process", 202, json={})
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = call(local_stack, "GET", f"/jobs/{job['id']}", 200)
    assert job["status"] == "succeeded", job
    progress = call(local_stack, "GET", f"/manifests/{m}/progress", 200)
    assert progress["id"] == job["id"]
