"""A fork with a new photo through the whole stack: the photo is PUT to the signed URL in the
fork's answer, the storage trigger attaches it, the fork's task starts a manifesting job on the
model service for that image alone (its face matched against the inherited ones), then the
pipeline runs to the finished video, making nothing the preview said it would reuse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e
PHOTO = Path(".local/sample-photos/Tom_Hanks_54745.png")


def call(stack: Any, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
    response = requests.request(method, f"{stack.api_url}{path}", timeout=30, **kwargs)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


def settled(stack: Any, path: str, key: str, done: set[str], seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = call(stack, "GET", path)
        if (found.get("project") or found)[key] in done:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {done} within {seconds}s: {found}")


def test_a_fork_with_a_new_photo_of_a_known_face_runs_through_upload_job_and_pipeline(
    local_stack: Any,
) -> None:
    if not PHOTO.exists():
        pytest.skip("sample photos missing: run ./scripts/sample_photos")
    photo = PHOTO.read_bytes()
    mid = call(local_stack, "POST", "/manifests", 201, json={"name": "e2e fork cast"})["id"]
    hero = call(local_stack, "POST", f"/manifests/{mid}/assets", 201,
                json={"asset_type": "CHARACTER", "name": "Tom"})  # fmt: skip
    call(local_stack, "POST", f"/manifests/{mid}/assets/{hero['id']}/upload",
         files={"file": (PHOTO.name, photo, "image/png")})  # fmt: skip
    job = call(local_stack, "POST", f"/manifests/{mid}/process", 202)
    assert (
        settled(local_stack, f"/jobs/{job['id']}", "status", {"succeeded", "failed"})["status"]
        == "succeeded"
    )
    group = call(local_stack, "GET", f"/manifests/{mid}/assets/{hero['id']}")["face_group_id"]
    assert group
    source = call(local_stack, "POST", "/generate", 202, json={
        "prompt": "an actor rehearses on an empty stage", "manifest_id": mid,
        "clip_seconds": 2, "total_seconds": 4})["id"]  # fmt: skip
    assert (
        settled(local_stack, f"/projects/{source}", "status", {"complete", "failed"})["project"][
            "status"
        ]
        == "complete"
    )

    forked = call(local_stack, "POST", f"/projects/{source}/forks", 202, json={
        "asset_changes": {"new_uploads": [{"asset_type": "CHARACTER", "name": "Tom again",
                                           "content_type": "image/png", "size_bytes": len(photo)}]}})  # fmt: skip
    assert forked["status"] == "awaiting_uploads"
    (slot,) = forked["uploads"]
    put = requests.put(slot["url"], data=photo, headers=slot["headers"], timeout=30)
    assert put.status_code == 200, put.text
    done = settled(local_stack, f"/projects/{forked['id']}", "status", {"complete", "failed"})

    assert done["project"]["status"] == "complete", done["project"]
    new = call(local_stack, "GET", f"/manifests/{forked['manifest_id']}/assets/{slot['asset_id']}")
    assert new["face_group_id"] == group
    plan = forked["preview"]["plan"]
    reused = {(s["index"], a) for s in done["scenes"] for a, r in s["reused_from"].items() if r}
    if done["project"]["final_video_reused_from"]:
        reused.add((None, "final_video"))
    planned = {(s["scene"], s["artifact"]) for s in plan["steps"] if s["action"] == "reuse"}
    assert planned <= reused and len(reused) == plan["reuse"] > 0
