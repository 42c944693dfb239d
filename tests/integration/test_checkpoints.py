"""Checkpoints and branches (C1–C4) with the local provider: edits per stage, continue on
new branches named from their parent, and only what an edit touches made again."""

from __future__ import annotations

import io
from typing import Any

import pytest

from functions.services import services
from shared.models.projects import Project
from shared.pipeline.ports import ClipOperation, ClipRequest
from tests.integration.conftest import Api, image_bytes
from tests.integration.test_pipeline import Tasks, generate, project, wrap
from tests.integration.test_pipeline import tasks as tasks


class CountingVideo:
    def __init__(self, inner: Any) -> None:
        self.inner, self.started = inner, []
        self.name = inner.name

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        self.started.append(request.prompt)
        return await self.inner.start_clip(request)  # type: ignore[no-any-return]

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation:
        return await self.inner.poll_clip(operation)  # type: ignore[no-any-return]


@pytest.fixture
def video(monkeypatch: pytest.MonkeyPatch) -> CountingVideo:
    counting = wrap(monkeypatch, "video", CountingVideo)
    services().pipeline._providers(Project(id="x", owner_id="x", name="x", prompt="x", clip_seconds=2, total_seconds=2,
                      scene_count=1, text_model="local-storyboard-1", image_model="local-keyframe-1",
                      video_model="local-clip-1"))  # fmt: skip
    return counting["video"]


def tree(api: Api, project_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/projects/{project_id}/checkpoints")  # type: ignore[no-any-return]


def checkpoint_of(api: Api, project_id: str, stage: str, branch: str = "main") -> str:
    found = [
        c for c in tree(api, project_id)["items"] if c["stage"] == stage and c["branch"] == branch
    ]
    assert found, (stage, branch)
    return found[-1]["id"]  # type: ignore[no-any-return]


def test_each_stage_accepts_only_its_own_edits(api: Api, tasks: Tasks) -> None:
    created = generate(api)
    tasks.deliver_all()
    pid = created["id"]
    storyboard, keyframes, clips = (
        checkpoint_of(api, pid, s) for s in ("storyboard", "keyframes", "clips")
    )

    refused = [
        api.call("POST", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0/keyframe/regenerate"),
        api.call("POST", f"/projects/{pid}/checkpoints/{keyframes}/scenes/0/clip/regenerate"),
        api.call("PATCH", f"/projects/{pid}/checkpoints/{clips}/scenes/0", json={"title": "x"}),
        api.call("PATCH", f"/projects/{pid}/checkpoints/{keyframes}/scenes/0", json={"title": "x"}),
    ]
    assert [r.status_code for r in refused] == [409] * 4
    assert "at the storyboard checkpoint" in refused[3].get_json()["error"]["message"]
    assert "keyframes checkpoint" in refused[3].get_json()["error"]["message"]
    assert (
        api.call(
            "PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/9", json={"title": "x"}
        ).status_code
        == 404
    )
    unknown_tag = api.call(
        "PATCH",
        f"/projects/{pid}/checkpoints/{storyboard}/scenes/0",
        json={"asset_tags": ["CHAR_42"]},
    )
    assert unknown_tag.status_code == 422


def test_an_edited_clip_is_the_only_clip_made_again_on_a_new_branch(
    api: Api, tasks: Tasks, video: CountingVideo
) -> None:
    created = generate(api)
    tasks.deliver_all()
    pid = created["id"]
    before = project(api, pid)
    assert len(video.started) == 3
    clips = checkpoint_of(api, pid, "clips")

    api.ok(
        "POST",
        f"/projects/{pid}/checkpoints/{clips}/scenes/1/clip/regenerate",
        json={"motion_prompt": "a slow pan left"},
    )
    continued = api.ok(
        "POST", f"/projects/{pid}/checkpoints/{clips}/continue", 202, json={"auto_continue": True}
    )
    assert continued["branch"] == "main-1"
    tasks.deliver_all()

    after = project(api, pid)
    assert after["project"]["status"] == "complete"
    assert video.started[3:] == ["a slow pan left"]  # one clip, the edited one
    assert [s["clip_url"] is not None for s in after["scenes"]] == [True] * 3
    assert [s["keyframe_state"] for s in after["scenes"]] == ["done"] * 3
    assert after["scenes"][0]["start_frame_url"] == before["scenes"][0]["start_frame_url"]
    stitched = [c for c in tree(api, pid)["items"] if c["stage"] == "stitch"]
    assert [c["branch"] for c in stitched] == ["main", "main-1"]
    assert stitched[1]["parent_id"] is not None


def test_branches_are_named_from_their_parent(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    main_storyboard = checkpoint_of(api, pid, "storyboard")

    api.ok(
        "PATCH",
        f"/projects/{pid}/checkpoints/{main_storyboard}/scenes/0",
        json={"title": "A new opening"},
    )
    assert (
        api.ok(
            "POST",
            f"/projects/{pid}/checkpoints/{main_storyboard}/continue",
            202,
            json={"auto_continue": True},
        )["branch"]
        == "main-1"
    )
    tasks.deliver_all()
    assert project(api, pid)["scenes"][0]["title"] == "A new opening"

    keyframes_1 = checkpoint_of(api, pid, "keyframes", "main-1")
    api.ok(
        "POST",
        f"/projects/{pid}/checkpoints/{keyframes_1}/scenes/2/keyframe",
        data={
            "file": (io.BytesIO(image_bytes("PNG", (640, 360))), "k.png", "image/png"),
            "frame": "end",
        },
    )
    assert (
        api.ok("POST", f"/projects/{pid}/checkpoints/{keyframes_1}/continue", 202)["branch"]
        == "main-1-1"
    )
    tasks.deliver_all()

    api.ok(
        "PATCH",
        f"/projects/{pid}/checkpoints/{main_storyboard}/scenes/1",
        json={"shot_type": "close_up"},
    )
    assert (
        api.ok("POST", f"/projects/{pid}/checkpoints/{main_storyboard}/continue", 202)["branch"]
        == "main-2"
    )

    branches = {b["name"]: b["parent"] for b in tree(api, pid)["branches"]}
    assert branches == {"main": None, "main-1": "main", "main-1-1": "main-1", "main-2": "main"}


def test_checkpoints_never_change_and_every_version_stays_readable(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    original = api.ok("GET", f"/projects/{pid}/checkpoints/{storyboard}")
    title = original["scenes"][0]["title"]

    api.ok(
        "PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0", json={"title": "Draft one"}
    )
    api.ok(
        "PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0", json={"title": "Draft two"}
    )

    pending = api.ok("GET", f"/projects/{pid}/checkpoints/{storyboard}")
    assert pending["edited"] is True
    assert pending["scenes"][0]["title"] == "Draft two"
    stored = services().projects_repo.checkpoint(pid, storyboard)
    assert stored is not None and stored.scenes[0].title == title
    versions = api.ok("GET", f"/projects/{pid}/versions")["items"]
    assert [(v["version"], v["made_by"], v["fields"]["title"]) for v in versions] == [
        (1, "made", title),
        (2, "edited", "Draft one"),
        (3, "edited", "Draft two"),
    ]


def test_an_unedited_continue_stays_on_its_branch_and_a_running_project_cannot_be_edited(
    api: Api, tasks: Tasks
) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    continued = api.ok(
        "POST", f"/projects/{pid}/checkpoints/{storyboard}/continue", 202,
        json={"auto_continue": True},
    )  # fmt: skip
    assert continued["branch"] == "main"
    refused = api.call(
        "PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0", json={"title": "x"}
    )
    assert refused.status_code == 409
    assert "stop it or wait" in refused.get_json()["error"]["message"]
    tasks.deliver_all()
    assert project(api, pid)["project"]["status"] == "complete"
    assert tree(api, pid)["current_checkpoint_id"] == checkpoint_of(api, pid, "stitch")
