"""Generation through the whole stack: the api enqueues the storyboard stage, the Tasks
emulator delivers each stage to the run_stage function, which queues the next, until the
stitched video is in the media bucket."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e


def test_a_prompt_becomes_a_video_through_cloud_tasks_and_run_stage(local_stack: Any) -> None:
    base = local_stack.api_url
    created = requests.post(f"{base}/generate", timeout=30, json={
        "prompt": "a paper boat sails down a rainy street", "clip_seconds": 2, "total_seconds": 4,
    })  # fmt: skip
    assert created.status_code == 202, created.text
    project_id = created.json()["id"]
    statuses = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        project = requests.get(f"{base}/projects/{project_id}", timeout=30).json()["project"]
        if not statuses or statuses[-1] != project["status"]:
            statuses.append(project["status"])
        if project["status"] in ("complete", "failed"):
            break
        time.sleep(0.2)

    assert project["status"] == "complete", project
    assert project["stages_done"] == ["storyboard", "keyframes", "clips", "stitch"]
    video = requests.get(f"{base}{project['video_url']}", timeout=30)
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"
    assert len(video.content) > 10_000
