"""Stuck work ends by itself: a worker killed mid-stage or mid-job (SIGKILL, so nothing of it
cleans up) and started again, as Cloud Run starts a new instance. Its lease stays held; the
redeliveries Cloud Tasks makes meanwhile are turned away until it runs out, and then the sweep
function (the stack's scheduler runs it every few seconds) queues the work again. No user
acts, and the result is what a clean run makes. The local stack's leases are 10 s."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e
PHOTOS = Path(".local/sample-photos")
GENERATE = {"prompt": "a lantern drifts across a dark lake", "clip_seconds": 2,
            "total_seconds": 8, "take_seed": 9090}  # fmt: skip


def call(stack: Any, method: str, path: str, expect: int, user: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer dev:{user}"}
    response = requests.request(
        method, f"{stack.api_url}{path}", timeout=30, headers=headers, **kwargs
    )
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


def until(check: Any, seconds: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"not within {seconds}s")


def finished_project(stack: Any, project_id: str, user: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found: dict[str, Any] = call(stack, "GET", f"/projects/{project_id}", 200, user)
        return found if found["project"]["status"] in ("complete", "failed") else None

    return until(done, 120, interval=0.3)  # type: ignore[no-any-return]


def video(stack: Any, project: dict[str, Any], user: str) -> bytes:
    answer = requests.get(f"{stack.api_url}{project['video_url']}", timeout=30,
                          headers={"Authorization": f"Bearer dev:{user}"})  # fmt: skip
    assert answer.status_code == 200
    return answer.content


def test_run_stage_killed_mid_stage_ends_complete_by_itself_like_a_clean_run(
    local_stack: Any,
) -> None:
    # A clean run by another owner: nothing of it can be reused by the killed one.
    clean_id = call(local_stack, "POST", "/generate", 202, "clean", json=GENERATE)["id"]
    clean = finished_project(local_stack, clean_id, "clean")["project"]
    assert clean["status"] == "complete"

    project_id = call(local_stack, "POST", "/generate", 202, "killed", json=GENERATE)["id"]

    def past_the_storyboard() -> bool:
        status = call(local_stack, "GET", f"/projects/{project_id}", 200, "killed")["project"]
        return status["status"] in ("keyframing", "video_gen", "stitching", "complete")

    until(past_the_storyboard, 60, interval=0.02)
    with local_stack.paused("run_stage"):  # frozen mid-stage, then killed where it stands
        killed_in = call(local_stack, "GET", f"/projects/{project_id}", 200, "killed")
        local_stack.kill_and_restart("run_stage")
    assert killed_in["project"]["status"] != "complete", "the run ended before the kill"

    done = finished_project(local_stack, project_id, "killed")["project"]
    assert done["status"] == "complete", done
    assert done["stages_done"] == ["storyboard", "keyframes", "clips", "stitch"]
    assert video(local_stack, done, "killed") == video(local_stack, clean, "clean")


def test_the_model_service_killed_mid_job_ends_complete_by_itself_like_a_clean_run(
    local_stack: Any,
) -> None:
    photos = [PHOTOS / "zidane.jpg", PHOTOS / "bus.jpg"]
    if not all(p.exists() for p in photos):
        pytest.skip("sample photos missing: run ./scripts/bootstrap")

    def manifest(user: str) -> str:
        manifest_id: str = call(local_stack, "POST", "/manifests", 201, user,
                                json={"name": "cast"})["id"]  # fmt: skip
        for photo in photos:
            asset = call(local_stack, "POST", f"/manifests/{manifest_id}/assets", 201, user,
                         json={"asset_type": "CHARACTER", "name": photo.stem})  # fmt: skip
            with photo.open("rb") as handle:
                call(local_stack, "POST", f"/manifests/{manifest_id}/assets/{asset['id']}/upload",
                     200, user, files={"file": (photo.name, handle, "image/jpeg")})  # fmt: skip
        return manifest_id

    def job_of(manifest_id: str, user: str) -> dict[str, Any]:
        return call(local_stack, "GET", f"/manifests/{manifest_id}/progress", 200, user)  # type: ignore[no-any-return]

    def tags(manifest_id: str, user: str) -> list[tuple[str, str | None]]:
        found = call(local_stack, "GET", f"/manifests/{manifest_id}", 200, user)
        return sorted((a["manifest_tag"], a["detection_class"]) for a in found["assets"])

    clean_id = manifest("clean")
    call(local_stack, "POST", f"/manifests/{clean_id}/process", 202, "clean")
    until(lambda: job_of(clean_id, "clean")["status"] == "succeeded", 120, interval=0.3)

    killed_id = manifest("killed")
    job = call(local_stack, "POST", f"/manifests/{killed_id}/process", 202, "killed")
    until(lambda: job_of(killed_id, "killed")["status"] == "running", 60, interval=0.02)
    with local_stack.paused("models"):
        killed_at = job_of(killed_id, "killed")
        local_stack.kill_and_restart("models")
    assert killed_at["status"] == "running", "the job ended before the kill"

    ended = until(
        lambda: (j := job_of(killed_id, "killed"))["status"] in ("succeeded", "failed") and j,
        120, interval=0.3,
    )  # fmt: skip
    assert ended["id"] == job["id"] and ended["status"] == "succeeded", ended
    assert ended["attempts"] >= 2
    assert tags(killed_id, "killed") == tags(clean_id, "clean")
