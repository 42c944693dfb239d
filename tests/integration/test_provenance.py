"""Provenance by content (P1) over the API: every artifact keyed by its inputs, reused from the
owner's index wherever they recur; continue makes exactly what misses; checkpoints are
immutable views; project writes hold under concurrent requests and deliveries."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

from functions.services import services
from shared.models.projects import Project
from shared.pipeline.ports import (
    ClipRequest,
    GeneratedImage,
    KeyframeRequest,
)
from shared.pipeline.providers import Providers, providers_for
from tests.integration.conftest import Api, image_bytes
from tests.integration.test_pipeline import Tasks, generate, project, ready_manifest
from tests.integration.test_pipeline import tasks as tasks


@dataclass
class Calls:
    """Every model call the pipeline makes, by kind."""

    text: list[str] = field(default_factory=list)
    image: list[KeyframeRequest] = field(default_factory=list)
    video: list[ClipRequest] = field(default_factory=list)
    stitch: int = 0

    def counts(self) -> dict[str, int]:
        return {"text": len(self.text), "image": len(self.image), "video": len(self.video),
                "stitch": self.stitch}  # fmt: skip

    def reset(self) -> None:
        self.text, self.image, self.video, self.stitch = [], [], [], 0

    def note(self, method: str, *args: Any) -> None:
        if method == "storyboard":
            self.text.append(args[0].prompt)
        elif method == "keyframe":
            self.image.append(args[0])
        elif method == "start_clip":
            self.video.append(args[0])
        elif method == "stitch":
            self.stitch += 1


class Noting:
    """A provider that notes its calls in `Calls` and passes them to the real one."""

    def __init__(self, real: Any, calls: Calls) -> None:
        self._real, self._calls = real, calls
        self.name = getattr(real, "name", "")

    def __getattr__(self, method: str) -> Any:
        forward = getattr(self._real, method)
        if not callable(forward):
            return forward  # an attribute (max_concurrency), not a call

        def call(*args: Any) -> Any:
            self._calls.note(method, *args)
            return forward(*args)

        return call


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    found = Calls()

    def providers(p: Project) -> Providers:
        real = providers_for(p)
        return Providers(*(Noting(getattr(real, kind), found)
                           for kind in ("text", "image", "video", "stitcher")))  # fmt: skip

    monkeypatch.setattr(services().pipeline, "_providers", providers)
    return found


def checkpoints(api: Api, pid: str) -> list[dict[str, Any]]:
    return api.ok("GET", f"/projects/{pid}/checkpoints")["items"]  # type: ignore[no-any-return]


def checkpoint_of(api: Api, pid: str, stage: str, branch: str = "main") -> str:
    found = [c for c in checkpoints(api, pid) if c["stage"] == stage and c["branch"] == branch]
    assert found, (stage, branch)
    return found[-1]["id"]  # type: ignore[no-any-return]


def finished(api: Api, tasks: Tasks, **settings: Any) -> str:
    created = generate(api, total_seconds=8, **settings)  # 4 scenes of 2 s
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"
    return created["id"]  # type: ignore[no-any-return]


def objects(api: Api, pid: str) -> list[tuple[str | None, str | None, str | None]]:
    stored = services().projects_repo.scenes(pid)
    return [(s.start_frame_object, s.end_frame_object, s.clip_object) for s in stored]


def continue_(api: Api, pid: str, cid: str, status: int = 202, **body: Any) -> Any:
    return api.ok("POST", f"/projects/{pid}/checkpoints/{cid}/continue", status, json=body)


def test_one_scene_edited_on_a_finished_video_remakes_exactly_that_scene(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    pid = finished(api, tasks)
    before = objects(api, pid)
    calls.reset()
    storyboard = checkpoint_of(api, pid, "storyboard")
    api.ok("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/2",
           json={"keyframe_prompt": "the keeper climbs the stairs with a lantern",
                 "end_keyframe_prompt": "the lantern lights the lamp room"})  # fmt: skip

    planned = api.ok("GET", f"/projects/{pid}/checkpoints/{storyboard}/plan")
    assert {s["stage"]: (s["reuse"], s["make"]) for s in planned["stages"]} == {
        "keyframes": (6, 2), "clips": (3, 1), "stitch": (0, 1),
    }  # fmt: skip
    made = {(s["stage"], s["scene"]) for s in planned["steps"] if s["action"] == "make"}
    assert made == {("keyframes", 2), ("clips", 2), ("stitch", None)}
    continued = continue_(api, pid, storyboard, auto_continue=True)
    assert continued["branch"] == "main-1"
    assert continued["plan"] == planned
    tasks.deliver_all()

    assert calls.counts() == {"text": 0, "image": 2, "video": 1, "stitch": 1}
    assert calls.image[0].prompt == "the keeper climbs the stairs with a lantern"
    after = objects(api, pid)
    assert [after[i] for i in (0, 1, 3)] == [before[i] for i in (0, 1, 3)]
    assert after[2][0] != before[2][0] and after[2][2] != before[2][2]
    detail = project(api, pid)
    assert detail["project"]["status"] == "complete"
    reused = [sorted(s["reused_from"]) for s in detail["scenes"]]
    assert reused == [["clip", "end_frame", "start_frame"]] * 2 + [[]] + [
        ["clip", "end_frame", "start_frame"]
    ]
    assert detail["scenes"][0]["reused_from"]["clip"]["project_id"] == pid
    assert detail["project"]["cost"]["spent_usd"] == planned["cost_usd"] == 0


def test_a_title_edit_makes_nothing_and_every_artifact_is_reused(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    pid = finished(api, tasks)
    before, video = objects(api, pid), project(api, pid)["project"]["video_url"]
    first_video = services().projects_repo.get(pid).final_video_object  # type: ignore[union-attr]
    calls.reset()
    storyboard = checkpoint_of(api, pid, "storyboard")
    edited = api.ok("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/1",
                    json={"title": "A quieter title"})  # fmt: skip
    assert edited["version"] == 2

    continued = continue_(api, pid, storyboard, auto_continue=True)
    assert (continued["plan"]["make"], continued["plan"]["reuse"]) == (0, 4 * 2 + 4 + 1)
    tasks.deliver_all()

    assert calls.counts() == {"text": 0, "image": 0, "video": 0, "stitch": 0}
    assert objects(api, pid) == before
    done = project(api, pid)["project"]
    assert done["branch"] == "main-1" and done["status"] == "complete" and video
    assert services().projects_repo.get(pid).final_video_object == first_video  # type: ignore[union-attr]
    assert done["final_video_reused_from"]["project_id"] == pid


def test_a_tag_edit_chooses_the_references_again_and_rebuilds_the_prompt_context(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    manifest_id, hero = ready_manifest(api)
    created = generate(api, manifest_id=manifest_id, total_seconds=6, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    assert hero["id"] in project(api, pid)["scenes"][0]["reference_asset_ids"]

    edited = api.ok("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0",
                    json={"asset_tags": ["ENV_01"], "shot_type": "wide"})  # fmt: skip
    assert edited["reference_asset_ids"] == [], "the lighthouse has no image to show"
    continue_(api, pid, storyboard, auto_continue=True)
    tasks.deliver_all()

    sent = [r for r in calls.image if r.prompt.startswith(edited["keyframe_prompt"])]
    assert len(sent) == 1 and sent[0].references == []
    context = sent[0].prompt.removeprefix(edited["keyframe_prompt"])
    assert "ENV_01 (Lighthouse)" in context and "CHAR_01" not in context
    others = [r for r in calls.image if r not in sent]
    assert others and all("CHAR_01 (Ada)" in r.prompt for r in others if r.references)


def test_an_older_unedited_checkpoint_continues_only_on_a_new_branch_and_makes_nothing(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    pid = finished(api, tasks)
    calls.reset()
    keyframes = checkpoint_of(api, pid, "keyframes")
    clips = checkpoint_of(api, pid, "clips")

    refused = api.call("POST", f"/projects/{pid}/checkpoints/{keyframes}/continue", json={})
    assert refused.status_code == 409
    message = refused.get_json()["error"]["message"]
    assert clips in message and "new_branch" in message
    assert len(checkpoints(api, pid)) == 4

    continued = continue_(api, pid, keyframes, new_branch=True, auto_continue=True)
    assert continued["branch"] == "main-1" and continued["plan"]["make"] == 0
    tasks.deliver_all()
    assert calls.counts() == {"text": 0, "image": 0, "video": 0, "stitch": 0}
    assert [c["branch"] for c in checkpoints(api, pid)] == ["main"] * 4 + ["main-1"] * 2


def _location(response: Any) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)
    return unquote(response.headers["Location"])


def test_a_checkpoints_links_answer_its_own_files_and_the_project_links_the_newest(
    api: Api, tasks: Tasks
) -> None:
    pid = finished(api, tasks)
    old = objects(api, pid)
    main_keyframes, main_stitch = (
        checkpoint_of(api, pid, "keyframes"),
        checkpoint_of(api, pid, "stitch"),
    )
    storyboard = checkpoint_of(api, pid, "storyboard")
    api.ok("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0",
           json={"keyframe_prompt": "a gull lands on the rail"})  # fmt: skip
    continue_(api, pid, storyboard, auto_continue=True)
    tasks.deliver_all()
    new = objects(api, pid)
    assert new[0][0] != old[0][0]

    at = f"/projects/{pid}/checkpoints"
    assert old[0][0] in _location(api.call("GET", f"{at}/{main_keyframes}/scenes/0/start-frame"))
    assert new[0][0] in _location(api.call("GET", f"/projects/{pid}/scenes/0/start-frame"))
    new_stitch = checkpoint_of(api, pid, "stitch", "main-1")
    old_video = _location(api.call("GET", f"{at}/{main_stitch}/video"))
    assert old_video != _location(api.call("GET", f"{at}/{new_stitch}/video"))
    detail = api.ok("GET", f"{at}/{main_keyframes}")
    assert detail["scenes"][0]["start_frame_url"] == f"{at}/{main_keyframes}/scenes/0/start-frame"

    missing = api.call("GET", f"{at}/{storyboard}/scenes/0/clip")
    assert missing.status_code == 404
    assert "holds no clip" in missing.get_json()["error"]["message"]
    assert api.call("GET", f"{at}/{storyboard}/video").status_code == 404
    current = api.ok("GET", f"{at}/current")
    assert current["checkpoint"]["id"] == new_stitch
    only = api.ok("GET", f"{at}?branch=main-1")["items"]
    assert [c["stage"] for c in only] == ["keyframes", "clips", "stitch"]
    assert [c["depth"] for c in only] == [1, 2, 3]
    tree = {c["id"]: c for c in checkpoints(api, pid)}
    assert sorted(tree[storyboard]["children"]) == sorted([main_keyframes, only[0]["id"]])


def test_a_project_without_checkpoints_has_no_current_one(api: Api, tasks: Tasks) -> None:
    pid = generate(api)["id"]
    missing = api.call("GET", f"/projects/{pid}/checkpoints/current")
    assert missing.status_code == 404
    assert "no checkpoint yet" in missing.get_json()["error"]["message"]


def test_an_edit_that_changes_nothing_is_refused_and_writes_nothing(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    title = project(api, pid)["scenes"][0]["title"]
    path = f"/projects/{pid}/checkpoints/{storyboard}/scenes/0"

    for body in ({}, {"title": title}):
        refused = api.call("PATCH", path, json=body)
        assert refused.status_code == 422, body
    assert api.ok("GET", f"/projects/{pid}/checkpoints/{storyboard}")["edited"] is False
    assert api.ok("GET", f"/projects/{pid}/versions")["items"] == []


def test_review_pace_pauses_after_every_stage_of_a_continue(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    seen = []
    for _ in range(3):
        current = project(api, pid)["project"]
        assert current["status"] == "staged"
        seen.append(current["stages_done"][-1])
        continue_(api, pid, current["current_checkpoint_id"])
        tasks.deliver_all()
    assert seen == ["storyboard", "keyframes", "clips"]
    assert project(api, pid)["project"]["status"] == "complete"
    assert [c["branch"] for c in checkpoints(api, pid)] == ["main"] * 4


def test_a_keyframe_regenerates_as_a_task_and_continue_waits_for_it(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    pid = finished(api, tasks)
    calls.reset()
    keyframes = checkpoint_of(api, pid, "keyframes")
    at = f"/projects/{pid}/checkpoints/{keyframes}"
    old = objects(api, pid)[1][0]

    queued = api.ok("POST", f"{at}/scenes/1/keyframe/regenerate", 202, json={"frame": "start"})
    assert queued["version"] == 2 and calls.counts()["image"] == 0
    assert api.ok("GET", at)["pending"] == [{"scene": 1, "frame": "start", "version": 2}]
    waiting = api.call("POST", f"{at}/continue", json={"new_branch": True})
    assert waiting.status_code == 409 and "still being regenerated" in waiting.get_data(
        as_text=True
    )

    tasks.deliver_all()
    assert calls.counts()["image"] == 1
    detail = api.ok("GET", at)
    assert detail["pending"] == [] and detail["edited"] is True
    assert services().projects_repo.draft(pid, keyframes).scenes["1"]["start_frame_object"] != old
    versions = [
        (v["scene"], v["version"], v["made_by"])
        for v in api.ok("GET", f"/projects/{pid}/versions")["items"]
    ]
    assert versions == [(1, 1, "made"), (1, 2, "regenerated")]

    again = api.ok("POST", f"{at}/scenes/1/keyframe/regenerate", 202, json={"frame": "start"})
    assert again["version"] == 3
    tasks.deliver_all()
    assert calls.counts()["image"] == 2, "a second re-roll asks for another result"
    continue_(api, pid, keyframes, auto_continue=True)
    tasks.deliver_all()
    assert calls.counts() == {"text": 0, "image": 2, "video": 1, "stitch": 1}


def test_the_same_take_is_reused_by_its_owner_and_never_across_owners(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    first = finished(api, tasks, take_seed=4242)
    assert calls.counts() == {"text": 1, "image": 8, "video": 4, "stitch": 1}
    calls.reset()

    finished(api, tasks, take_seed=4242)
    assert calls.counts() == {"text": 0, "image": 0, "video": 0, "stitch": 0}

    created = api.ok("POST", "/generate", 202, user="mallory",
                     json={"prompt": "a lighthouse keeper finds a message in a bottle",
                           "clip_seconds": 2, "total_seconds": 8, "take_seed": 4242})  # fmt: skip
    tasks.deliver_all()
    assert calls.counts() == {"text": 1, "image": 8, "video": 4, "stitch": 1}
    calls.reset()

    another_take = finished(api, tasks)
    assert calls.counts()["image"] == 8, "a new generate is a new take"
    takes = {project(api, p)["project"]["take_seed"] for p in (first, another_take)}
    assert len(takes) == 2 and created["take_seed"] == 4242


def test_a_stage_task_delivered_three_times_at_once_records_one_checkpoint(
    api: Api, tasks: Tasks
) -> None:
    pid = generate(api)["id"]
    tasks.deliver_all(limit=1)  # the storyboard
    keyframes = tasks.queued.pop(0)
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda _: services().pipeline.run(keyframes), range(3)))
    while (
        tasks.queued
    ):  # deliveries that found the stage busy come back later, as Cloud Tasks would
        tasks.queued = [t for i, t in enumerate(tasks.queued) if t not in tasks.queued[:i]]
        tasks.deliver_all(limit=1)
    services().pipeline.run(keyframes)

    done = project(api, pid)["project"]
    assert done["status"] == "complete"
    assert done["stages_done"] == ["storyboard", "keyframes", "clips", "stitch"]
    assert [c["stage"] for c in checkpoints(api, pid)] == [
        "storyboard",
        "keyframes",
        "clips",
        "stitch",
    ]


def test_of_two_concurrent_continues_one_wins(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    api.ok("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0", json={"title": "New"})
    client = api.client.application.test_client

    def post(_: int) -> int:
        return (
            client().post(f"/projects/{pid}/checkpoints/{storyboard}/continue", json={}).status_code
        )  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(post, range(2)))
    assert statuses == [202, 409]
    assert sorted(b["name"] for b in api.ok("GET", f"/projects/{pid}/checkpoints")["branches"]) == [
        "main", "main-1",
    ]  # fmt: skip


def test_concurrent_edits_of_one_draft_lose_nothing_and_never_repeat_a_version(
    api: Api, tasks: Tasks
) -> None:
    created = generate(api, run_through="storyboard", total_seconds=12)
    tasks.deliver_all()
    pid = created["id"]
    storyboard = checkpoint_of(api, pid, "storyboard")
    client = api.client.application.test_client
    edits = [(i % 6, f"Title {i}") for i in range(12)]

    def patch(edit: tuple[int, str]) -> int:
        index, title = edit
        response = client().patch(f"/projects/{pid}/checkpoints/{storyboard}/scenes/{index}",
                                  json={"title": title})  # fmt: skip
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["version"]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(patch, edits))
    versions = api.ok("GET", f"/projects/{pid}/versions")["items"]
    edited = [(v["scene"], v["version"]) for v in versions if v["made_by"] == "edited"]
    assert len(edited) == len(set(edited)) == 12
    assert sorted(edited) == [(s, v) for s in range(6) for v in (2, 3)]
    draft = services().projects_repo.draft(pid, storyboard)
    assert sorted(draft.scenes) == [str(i) for i in range(6)]
    last = {v["scene"]: v["fields"]["title"] for v in sorted(versions, key=lambda v: v["version"])}
    assert {int(k): v["title"] for k, v in draft.scenes.items()} == last


def test_an_uploaded_keyframe_remakes_only_its_scenes_clip(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    pid = finished(api, tasks)
    calls.reset()
    keyframes = checkpoint_of(api, pid, "keyframes")
    api.ok("POST", f"/projects/{pid}/checkpoints/{keyframes}/scenes/3/keyframe",
           data={"file": (io.BytesIO(image_bytes("PNG", (640, 360))), "k.png", "image/png"),
                 "frame": "end"})  # fmt: skip
    uploaded = services().projects_repo.draft(pid, keyframes).scenes["3"]["end_frame_object"]
    link = api.ok("GET", f"/projects/{pid}/checkpoints/{keyframes}")["scenes"][3]["end_frame_url"]
    assert link.endswith("?draft=true")
    assert uploaded in _location(api.call("GET", link))
    assert uploaded not in _location(api.call("GET", link.removesuffix("?draft=true")))
    plan = api.ok("GET", f"/projects/{pid}/checkpoints/{keyframes}/plan")
    assert [(s["stage"], s["reuse"], s["make"]) for s in plan["stages"]] == [
        ("clips", 3, 1), ("stitch", 0, 1),
    ]  # fmt: skip
    continue_(api, pid, keyframes, auto_continue=True)
    tasks.deliver_all()
    assert calls.counts() == {"text": 0, "image": 0, "video": 1, "stitch": 1}


def test_a_delivery_of_a_stopped_run_writes_no_scene_and_its_paid_work_is_reused(
    api: Api, tasks: Tasks, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = generate(api, total_seconds=6)["id"]
    tasks.deliver_all(limit=1)  # the storyboard
    scenes = project(api, pid)["scenes"]
    counting = services().pipeline._providers

    def providers(p: Project) -> Providers:
        real = counting(p)

        class StoppedMidway:
            name = real.image.name

            async def keyframe(self, r: KeyframeRequest) -> GeneratedImage:
                if r.prompt == scenes[1]["keyframe_prompt"]:
                    api.ok("POST", f"/projects/{pid}/stop")  # the user stops it meanwhile
                return await real.image.keyframe(r)  # type: ignore[no-any-return]

        return Providers(real.text, StoppedMidway(), real.video, real.stitcher)

    monkeypatch.setattr(services().pipeline, "_providers", providers)
    tasks.deliver_all(limit=1)  # keyframes: stopped at scene 1
    stopped = project(api, pid)
    assert stopped["project"]["status"] == "stopped"
    # Scene 1's frame was in flight when the stop landed: not written (the others ran at the
    # same time and may or may not have been written before it).
    assert stopped["scenes"][1]["keyframe_state"] == "pending"

    monkeypatch.setattr(services().pipeline, "_providers", counting)
    api.ok("POST", f"/projects/{pid}/resume")
    tasks.deliver_all()
    assert project(api, pid)["project"]["status"] == "complete"
    prompts = [r.prompt for r in calls.image]
    assert prompts.count(scenes[1]["keyframe_prompt"]) == 1, "made once, before the stop"
    assert len(prompts) == 6
