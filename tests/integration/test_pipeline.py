"""The generation pipeline (G1–G5, C1) with the local provider, against the emulators. Stage
tasks are recorded and delivered by the test, in order, once or twice as Cloud Tasks might."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from functions.services import services
from shared.clients import firestore_client
from shared.models.common import utcnow
from shared.models.projects import Project
from shared.pipeline.ports import (
    ClipOperation,
    ClipRequest,
    GeneratedImage,
    KeyframeRequest,
    ProviderError,
)
from shared.pipeline.providers import Providers, providers_for
from shared.pipeline.runner import StageOutcome, StageTask
from tests.integration.conftest import Api, image_bytes

T = TypeVar("T")


class Tasks:
    """Stands in for Cloud Tasks: keeps what is enqueued; the test delivers it."""

    def __init__(self) -> None:
        self.queued: list[StageTask] = []

    def enqueue(
        self, queue: str, url: str, payload: Any, *, task_id: str, delay_s: float = 0
    ) -> None:
        assert queue == "pipeline"
        self.queued.append(payload)

    def deliver_all(self, limit: int = 50) -> list[StageOutcome]:
        outcomes = []
        while self.queued and len(outcomes) < limit:
            outcomes.append(services().pipeline.run(self.queued.pop(0)))
        return outcomes


def wrap(monkeypatch: pytest.MonkeyPatch, kind: str, make: Callable[[Any], T]) -> dict[str, T]:
    """Has every project's `kind` provider (image or video) wrapped by one `make(real)`."""
    holder: dict[str, T] = {}

    def providers(p: Project) -> Providers:
        real = providers_for(p)
        holder.setdefault(kind, make(getattr(real, kind)))
        parts = {"text": real.text, "image": real.image, "video": real.video,
                 "stitcher": real.stitcher, kind: holder[kind]}  # fmt: skip
        return Providers(**parts)

    monkeypatch.setattr(services().pipeline, "_providers", providers)
    return holder


@pytest.fixture
def tasks(api: Api, monkeypatch: pytest.MonkeyPatch) -> Tasks:
    recorder = Tasks()
    monkeypatch.setattr(services().pipeline, "_dispatcher", lambda: recorder)
    return recorder


def generate(api: Api, **settings: Any) -> dict[str, Any]:
    body = {"prompt": "a lighthouse keeper finds a message in a bottle", "clip_seconds": 2,
            "total_seconds": 6, **settings}  # fmt: skip
    return api.ok("POST", "/generate", 202, json=body)  # type: ignore[no-any-return]


def project(api: Api, project_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/projects/{project_id}")  # type: ignore[no-any-return]


def test_a_prompt_becomes_a_stitched_video_stage_by_stage(
    api: Api, tasks: Tasks, settings: Any
) -> None:
    created = generate(api)
    assert created["status"] == "pending"
    assert created["scene_count"] == 3

    assert tasks.deliver_all() == [StageOutcome.DONE] * 4

    done = project(api, created["id"])
    assert done["project"]["status"] == "complete"
    assert done["project"]["stages_done"] == ["storyboard", "keyframes", "clips", "stitch"]
    assert [s["keyframe_state"] for s in done["scenes"]] == ["done"] * 3
    assert [s["clip_state"] for s in done["scenes"]] == ["done"] * 3
    video = api.call("GET", done["project"]["video_url"])
    assert video.status_code == 302
    import requests

    mp4 = requests.get(video.headers["Location"], timeout=10).content
    assert mp4[4:8] == b"ftyp"
    checkpoints = api.ok("GET", f"/projects/{created['id']}/checkpoints")["items"]
    assert [c["stage"] for c in checkpoints] == ["storyboard", "keyframes", "clips", "stitch"]
    assert checkpoints[1]["parent_id"] == checkpoints[0]["id"]
    assert done["project"]["current_checkpoint_id"] == checkpoints[-1]["id"]


def test_each_stage_delivered_twice_does_its_work_once(api: Api, tasks: Tasks) -> None:
    created = generate(api)
    while tasks.queued:
        task = tasks.queued[0]
        services().pipeline.run(task)  # the first delivery queues the next stage
        first_scenes = project(api, created["id"])["scenes"]
        assert services().pipeline.run(task) is StageOutcome.DONE  # a redelivery
        assert project(api, created["id"])["scenes"] == first_scenes
        tasks.queued.pop(0)
        # The redelivery re-queued the next stage: drop the duplicate, as dedup would.
        tasks.queued = [t for i, t in enumerate(tasks.queued) if t not in tasks.queued[:i]]
    checkpoints = api.ok("GET", f"/projects/{created['id']}/checkpoints")["items"]
    assert len(checkpoints) == 4
    assert project(api, created["id"])["project"]["status"] == "complete"


def test_run_through_pauses_after_the_storyboard_until_resumed(api: Api, tasks: Tasks) -> None:
    created = generate(api, run_through="storyboard")
    tasks.deliver_all()
    staged = project(api, created["id"])["project"]
    assert staged["status"] == "staged"
    assert staged["stages_done"] == ["storyboard"]

    api.ok("POST", f"/projects/{created['id']}/resume")
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"


def test_a_stopped_project_ignores_its_queued_tasks_and_resumes_where_it_was(
    api: Api, tasks: Tasks
) -> None:
    created = generate(api)
    tasks.deliver_all(limit=1)  # storyboard done, keyframes queued
    assert api.ok("POST", f"/projects/{created['id']}/stop")["status"] == "stopped"
    assert tasks.deliver_all() == [StageOutcome.DONE]  # the stale task quits
    stopped = project(api, created["id"])
    assert stopped["project"]["status"] == "stopped"
    assert all(s["keyframe_state"] == "pending" for s in stopped["scenes"])

    assert api.ok("POST", f"/projects/{created['id']}/resume")["status"] == "keyframing"
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"


def scene_prompt(api: Api, project_id: str, index: int) -> str:
    return project(api, project_id)["scenes"][index]["keyframe_prompt"]  # type: ignore[no-any-return]


class FailingScene:
    """An image model that refuses one prompt until told otherwise."""

    name = "local-keyframe-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.prompt, self.refuse = inner, "", True

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        if self.refuse and request.prompt == self.prompt:
            raise ProviderError("the image model refused the prompt")
        return await self.inner.keyframe(request)  # type: ignore[no-any-return]


def test_a_failure_names_stage_and_scene_and_resume_retries_that_scene(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = wrap(monkeypatch, "image", FailingScene)
    created = generate(api)
    tasks.deliver_all(limit=1)  # the storyboard
    failing["image"].prompt = scene_prompt(api, created["id"], 1)
    tasks.deliver_all()
    failed = project(api, created["id"])
    assert failed["project"]["status"] == "failed"
    assert failed["project"]["error"] == {
        "stage": "keyframes",
        "scene": 1,
        "cause": "the image model refused the prompt",
    }
    # The other scenes' calls ran at the same time and were kept: resume makes only scene 1.
    assert [s["keyframe_state"] for s in failed["scenes"]] == ["done", "pending", "done"]

    failing["image"].refuse = False
    api.ok("POST", f"/projects/{created['id']}/resume")
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"


def ready_manifest(api: Api) -> tuple[str, dict[str, Any]]:
    manifest_id = api.manifest("Cast")["id"]
    hero = api.asset(manifest_id, "CHARACTER", "Ada")
    path = f"/manifests/{manifest_id}/assets/{hero['id']}/upload"
    api.ok("POST", path, data={"file": (io.BytesIO(image_bytes()), "ada.jpg", "image/jpeg")})
    api.asset(manifest_id, "ENVIRONMENT", "Lighthouse")
    firestore_client().collection("manifests").document(manifest_id).update({"status": "READY"})
    return manifest_id, hero


def test_the_run_reads_its_snapshot_not_the_live_manifest(api: Api, tasks: Tasks) -> None:
    manifest_id, hero = ready_manifest(api)
    created = generate(api, manifest_id=manifest_id)
    assert created["snapshot_id"] == created["id"]
    # Edited after generate, before the storyboard runs: the run must not see it.
    api.ok("PATCH", f"/manifests/{manifest_id}/assets/{hero['id']}", json={"name": "Renamed"})
    api.asset(manifest_id, "PROP", "Added later")

    tasks.deliver_all()

    done = project(api, created["id"])
    placed = {tag for s in done["scenes"] for tag in s["asset_tags"]}
    assert placed <= {"CHAR_01", "ENV_01"}
    assert "CHAR_01" in placed
    prompts = " ".join(s["keyframe_prompt"] for s in done["scenes"])
    assert "Ada" in prompts and "Renamed" not in prompts
    assert any(hero["id"] in s["reference_asset_ids"] for s in done["scenes"])
    assert api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["times_used"] == 1


def test_tags_the_storyboard_model_invents_are_remapped(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.pipeline.local_provider import LocalTextModel

    def providers(p: Project) -> Providers:
        real = providers_for(p)
        return Providers(LocalTextModel(invent_tags=True), real.image, real.video, real.stitcher)

    monkeypatch.setattr(services().pipeline, "_providers", providers)
    manifest_id, _ = ready_manifest(api)
    created = generate(api, manifest_id=manifest_id, run_through="storyboard")
    tasks.deliver_all()

    scenes = project(api, created["id"])["scenes"]
    assert all(set(s["asset_tags"]) <= {"CHAR_01", "ENV_01"} for s in scenes)
    assert any(s["remapped_tags"] for s in scenes)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"video_model": "veo-2.0-generate-001", "clip_seconds": 6, "audio": True},
            "makes no audio",
        ),
        ({"video_model": "veo-3.0-generate-001", "clip_seconds": 5}, "4, 6, 8"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"run_through": "forever"}, "run_through"),
        ({"text_model": "gpt-9"}, "text_model"),
    ],
)
def test_settings_a_model_cannot_honour_are_refused(
    api: Api, tasks: Tasks, body: dict, message: str
) -> None:  # type: ignore[type-arg]
    response = api.call("POST", "/generate", json={"prompt": "a test prompt", **body})
    assert response.status_code == 422
    assert message in response.get_json()["error"]["message"]
    assert tasks.queued == []


def test_a_manifest_that_is_not_ready_or_not_yours_is_refused(api: Api, tasks: Tasks) -> None:
    draft = api.manifest("draft")["id"]
    assert (
        api.call(
            "POST", "/generate", json={"prompt": "a test prompt", "manifest_id": draft}
        ).status_code
        == 409
    )
    assert (
        api.call(
            "POST",
            "/generate",
            user="mallory",
            json={"prompt": "a test prompt", "manifest_id": draft},
        ).status_code
        == 404
    )
    assert tasks.queued == []


def test_projects_are_listed_newest_first_and_only_to_their_owner(api: Api, tasks: Tasks) -> None:
    first, second = generate(api), generate(api)
    assert [p["id"] for p in api.ok("GET", "/projects")["items"]] == [second["id"], first["id"]]
    assert api.ok("GET", "/projects", user="mallory")["items"] == []
    assert api.call("GET", f"/projects/{first['id']}", user="mallory").status_code == 404
    api.ok("PATCH", f"/projects/{first['id']}", json={"name": "Renamed"})
    assert api.call("DELETE", f"/projects/{second['id']}").status_code == 204
    assert [p["name"] for p in api.ok("GET", "/projects")["items"]] == ["Renamed"]


def test_the_cost_is_estimated_before_running_and_local_models_cost_nothing(
    api: Api, tasks: Tasks
) -> None:
    veo = {"prompt": "a test prompt", "video_model": "veo-3.0-fast-generate-001", "clip_seconds": 8,
           "total_seconds": 32, "text_model": "gemini-2.5-flash", "image_model": "gemini-2.5-flash-image"}  # fmt: skip
    paid = api.ok("POST", "/generate/estimate", json=veo)
    assert paid["clips"] > 0 and paid["keyframes"] > 0
    assert paid["total"] == pytest.approx(
        paid["storyboard"] + paid["keyframes"] + paid["clips"], abs=1e-3
    )
    with_audio = api.ok("POST", "/generate/estimate", json={**veo, "audio": True})
    assert with_audio["clips"] > paid["clips"]
    local = api.ok("POST", "/generate/estimate", json={"prompt": "a test prompt"})
    assert local["total"] == 0
    created = generate(api)
    tasks.deliver_all()
    cost = project(api, created["id"])["project"]["cost"]
    assert cost["estimate_usd"] == 0 and cost["spent_usd"] == 0
    assert tasks.queued == []


class CrashingOnce:
    """An image model whose worker dies (not a provider refusal) at one scene, once."""

    name = "local-keyframe-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.crashed, self.prompt = inner, [], False, ""

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        self.calls.append(request.prompt)
        if request.prompt == self.prompt and not self.crashed:
            self.crashed = True
            raise RuntimeError("instance shut down")
        return await self.inner.keyframe(request)  # type: ignore[no-any-return]


def test_a_stage_that_crashes_resumes_on_redelivery_without_redoing_finished_scenes(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = wrap(monkeypatch, "image", CrashingOnce)
    created = generate(api)
    tasks.deliver_all(limit=1)  # storyboard
    scenes = project(api, created["id"])["scenes"]
    holder["image"].prompt = scenes[1]["keyframe_prompt"]
    keyframes = tasks.queued[0]
    with pytest.raises(RuntimeError, match="instance shut down"):
        services().pipeline.run(keyframes)  # Cloud Tasks sees a 500 and delivers again
    assert services().pipeline.run(keyframes) is StageOutcome.DONE
    tasks.queued.pop(0)
    tasks.deliver_all()

    assert project(api, created["id"])["project"]["status"] == "complete"
    # Scene 0's two frames were made once; scene 1 was tried again after the crash.
    calls = holder["image"].calls
    assert calls.count(scenes[0]["keyframe_prompt"]) == 1
    assert calls.count(scenes[0]["end_keyframe_prompt"]) == 1
    assert calls.count(scenes[1]["keyframe_prompt"]) == 2


class SlowVideo:
    """A video model whose operations finish on the second poll, like Veo's."""

    name = "local-clip-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.polls, self.done = inner, 0, {}

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        finished = await self.inner.start_clip(request)
        self.done[finished.name] = finished
        return ClipOperation(finished.name)

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation:
        self.polls += 1
        return self.done[operation.name] if self.polls > 3 else operation


def test_long_clip_operations_are_polled_by_delayed_tasks_not_waited_on(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = wrap(monkeypatch, "video", SlowVideo)
    created = generate(api)
    outcomes = tasks.deliver_all()

    assert outcomes.count(StageOutcome.WAITING) >= 1
    assert project(api, created["id"])["project"]["status"] == "complete"
    assert holder["video"].polls >= 3


def test_resume_may_switch_models_within_the_projects_settings_and_status_tells_progress(
    api: Api, tasks: Tasks
) -> None:
    created = generate(api)
    tasks.deliver_all(limit=1)
    api.ok("POST", f"/projects/{created['id']}/stop")
    status = api.ok("GET", f"/projects/{created['id']}/status")
    assert status == {
        "status": "stopped", "stage": "keyframes", "stages_done": ["storyboard"],
        "branch": "main", "error": None, "scenes": 3, "keyframes_done": 0, "clips_done": 0,
        "spent_usd": 0.0,
    }  # fmt: skip

    refused = api.call(
        "POST", f"/projects/{created['id']}/resume", json={"video_model": "veo-3.0-generate-001"}
    )
    assert refused.status_code == 422
    assert "makes clips of 4, 6, 8 seconds" in refused.get_json()["error"]["message"]
    unknown = api.call("POST", f"/projects/{created['id']}/resume", json={"image_model": "dall-e"})
    assert unknown.status_code == 422

    resumed = api.ok(
        "POST", f"/projects/{created['id']}/resume", json={"text_model": "gemini-2.5-flash"}
    )
    assert resumed["text_model"] == "gemini-2.5-flash"
    tasks.deliver_all()
    assert api.ok("GET", f"/projects/{created['id']}/status")["clips_done"] == 3


class FailingOperation:
    """A video model whose first operation fails after it started, as a Veo job can."""

    name = "local-clip-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.started, self.failed = inner, 0, False

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        self.started += 1
        finished = await self.inner.start_clip(request)
        return ClipOperation(f"op-{self.started}") if not self.failed else finished

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation:
        self.failed = True
        return ClipOperation(operation.name, done=True, error="the video model gave up")


def test_an_operation_that_fails_after_it_started_fails_its_scene_and_resume_starts_anew(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = wrap(monkeypatch, "video", FailingOperation)
    created = generate(api, total_seconds=2)
    tasks.deliver_all()
    failed = project(api, created["id"])
    assert failed["project"]["status"] == "failed"
    assert failed["project"]["error"] == {
        "stage": "clips", "scene": 0, "cause": "the video model gave up"
    }  # fmt: skip
    assert failed["scenes"][0]["clip_state"] == "failed"
    assert failed["scenes"][0]["error"] == "the video model gave up"

    api.ok("POST", f"/projects/{created['id']}/resume")
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"
    assert holder["video"].started == 2, "a new operation, not the failed one polled again"


class KilledAtScene:
    """An image model whose worker is killed at one prompt: the delivery dies with it, and
    Cloud Tasks has run out of retries for that task (the test drops it)."""

    name = "local-keyframe-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.prompt = inner, [], ""

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        self.calls.append(request.prompt)
        if request.prompt == self.prompt:
            self.prompt = ""
            raise SystemExit("worker killed")
        return await self.inner.keyframe(request)  # type: ignore[no-any-return]


def age(project_id: str) -> None:
    """Time passes: the project's last write (and any lease) an hour old."""
    past = utcnow() - timedelta(hours=1)
    ref = firestore_client().collection("projects").document(project_id)
    leases = ref.get().get("leases") or {}
    ref.update({"updated_at": past, **{f"leases.`{chunk}`.until": past for chunk in leases}})


def killed_in_keyframes(api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch) -> Any:
    # One call at a time, so that the scenes before the kill are made and saved, and those
    # after it not started: what the requeued stage must make is then exact.
    monkeypatch.setattr(services().settings.pipeline, "concurrency", 1)
    killing = wrap(monkeypatch, "image", KilledAtScene)
    created = generate(api, take_seed=77)
    tasks.deliver_all(limit=1)  # the storyboard
    scenes = project(api, created["id"])["scenes"]
    killing["image"].prompt = scenes[1]["keyframe_prompt"]
    with pytest.raises(SystemExit):
        services().pipeline.run(tasks.queued.pop(0))
    age(created["id"])
    return created["id"], scenes, killing["image"]


def test_a_stage_whose_worker_died_is_requeued_by_the_sweeper_once_and_ends_like_a_clean_run(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch, sweep: Callable[[], Any]
) -> None:
    project_id, scenes, image = killed_in_keyframes(api, tasks, monkeypatch)
    assert project(api, project_id)["project"]["status"] == "keyframing"

    with ThreadPoolExecutor(3) as pool:  # sweeps may overlap: the stage is counted once
        reports = list(pool.map(lambda _: sweep(), range(3)))
    assert sum(r["stages_requeued"] for r in reports) == 1
    assert [t.stage.value for t in tasks.queued] == ["keyframes"]
    tasks.deliver_all()

    done = project(api, project_id)["project"]
    assert done["status"] == "complete" and done["requeues"] == 0
    assert image.calls.count(scenes[0]["keyframe_prompt"]) == 1  # made before the kill, kept
    assert image.calls.count(scenes[1]["keyframe_prompt"]) == 2
    # A clean run by another owner: the index is per owner, so it makes everything itself.
    clean = api.ok("POST", "/generate", 202, user="clean-owner", json={
        "prompt": "a lighthouse keeper finds a message in a bottle", "clip_seconds": 2,
        "total_seconds": 6, "take_seed": 77})  # fmt: skip
    tasks.deliver_all()
    assert services().projects_repo.get(clean["id"]).status.value == "complete"  # type: ignore[union-attr]
    assert fetch_video(api, clean["id"]) == fetch_video(api, project_id)
    assert sweep()["stages_requeued"] == 0  # nothing is stuck any more


def fetch_video(api: Api, project_id: str) -> bytes:
    from shared.clients import storage_client

    stored = services().projects_repo.get(project_id)
    assert stored is not None and stored.final_video_object
    bucket = storage_client().bucket(services().settings.storage.media_bucket)
    return bucket.blob(stored.final_video_object).download_as_bytes()  # type: ignore[no-any-return]


def test_resume_acts_on_a_stuck_stage(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id, _, _ = killed_in_keyframes(api, tasks, monkeypatch)
    api.ok("POST", f"/projects/{project_id}/resume")
    tasks.deliver_all()
    assert project(api, project_id)["project"]["status"] == "complete"


def test_a_stage_stuck_past_the_requeue_limit_fails_naming_why_and_resumes(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch, sweep: Callable[[], Any]
) -> None:
    monkeypatch.setattr(services().settings.tasks, "max_requeues", 1)
    project_id, _, _ = killed_in_keyframes(api, tasks, monkeypatch)
    assert sweep()["stages_requeued"] == 1
    tasks.queued.clear()  # that task is lost too
    age(project_id)
    assert sweep()["stages_failed"] == 1

    failed = project(api, project_id)["project"]
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "keyframes"
    assert "gave up after 2 unfinished tries" in failed["error"]["cause"]
    api.ok("POST", f"/projects/{project_id}/resume")
    tasks.deliver_all()
    assert project(api, project_id)["project"]["status"] == "complete"


class Overlapping:
    """An image model with a remote model's latency that notes how many calls it has in
    flight at once."""

    name = "local-keyframe-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.in_flight, self.most, self.calls = inner, 0, 0, 0

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.2)
            return await self.inner.keyframe(request)  # type: ignore[no-any-return]
        finally:
            self.in_flight -= 1


def test_a_stages_image_calls_run_at_once_up_to_the_projects_bound(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services().settings.pipeline, "concurrency", 5)
    image = wrap(monkeypatch, "image", Overlapping)
    created = generate(api, total_seconds=12)  # 6 scenes, 12 frames
    tasks.deliver_all()

    done = project(api, created["id"])
    assert done["project"]["status"] == "complete"
    assert all(s["keyframe_state"] == "done" for s in done["scenes"])
    assert image["image"].calls == 12
    assert image["image"].most == 5


def test_the_real_genai_providers_run_a_stages_calls_at_once_and_poll_clips_together(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-genai's own client against the stand-in, at a remote model's latency: each
    stage task runs its calls in one event loop with one client, at most `concurrency` at
    once, and the clips of the stage are polled by one delayed task per pass."""
    from dataclasses import replace

    from pydantic import SecretStr

    from shared.pipeline.local_video import LocalVideoModel
    from shared.settings import get_settings
    from tests.support.gemini_standin import GeminiStandin, StandinReply, VideoJob, sample_png

    models = get_settings().models
    frame = sample_png((640, 360))
    clip = asyncio.run(LocalVideoModel().start_clip(ClipRequest(
        prompt="a drift", start_frame=frame, end_frame=None, seconds=4, aspect_ratio="16:9",
        audio=False, seed=1,
    ))).video  # fmt: skip
    with GeminiStandin(replace(StandinReply.image(frame), delay_s=0.3)) as standin:
        standin.default_video_job = VideoJob(video=clip)
        monkeypatch.setattr(models, "gemini_api_key", SecretStr("test-key"))
        monkeypatch.setattr(models, "vertex_api_key", SecretStr("test-key"))
        monkeypatch.setattr(models, "gemini_base_url", standin.base_url)
        monkeypatch.setattr(services().settings.pipeline, "concurrency", 3)
        created = generate(api, image_model="gemini-2.5-flash-image",
                           video_model="veo-3.0-fast-generate-001", clip_seconds=4,
                           total_seconds=16)  # fmt: skip
        outcomes = tasks.deliver_all()

        done = project(api, created["id"])
        assert done["project"]["status"] == "complete", done["project"]
        assert all(s["clip_state"] == "done" for s in done["scenes"])
        assert len(standin.requests_to("generateContent")) == 8  # two frames per scene
        assert standin.max_in_flight == 3
        assert len(standin.requests_to("predictLongRunning")) == 4
        # Storyboard, keyframes, the clips started, two polls (the stand-in answers "not
        # done" once), stitch: one task for each pass over all four clips, not one per scene.
        assert outcomes == [StageOutcome.DONE, StageOutcome.DONE, StageOutcome.WAITING,
                            StageOutcome.WAITING, StageOutcome.DONE, StageOutcome.DONE]  # fmt: skip
        assert len(standin.requests_to("fetchPredictOperation")) == 8


class Recording:
    """An image model with a remote model's latency that keeps each call's prompt and the
    most calls in flight at once, across every chunk's event loop."""

    name = "local-keyframe-1"

    def __init__(self, inner: Any) -> None:
        self.inner, self.prompts, self.in_flight, self.most = inner, [], 0, 0

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        self.prompts.append(request.prompt)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.2)
            return await self.inner.keyframe(request)  # type: ignore[no-any-return]
        finally:
            self.in_flight -= 1


def chunked(tasks: Tasks, stage: str) -> list[StageTask]:
    """The stage's chunk tasks queued, once each (as Cloud Tasks' names dedupe)."""
    found = {(t.stage.value, t.chunk, t.poll): t for t in tasks.queued}
    tasks.queued = [t for t in tasks.queued if t.stage.value != stage]
    return sorted((t for (s, _, _), t in found.items() if s == stage), key=lambda t: t.chunk)


def test_a_long_stage_runs_in_chunks_at_once_and_ends_once_under_repeated_deliveries(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services().settings.pipeline, "chunk_scenes", 2)
    monkeypatch.setattr(services().settings.pipeline, "concurrency", 5)
    holder = wrap(monkeypatch, "image", Recording)
    created = generate(api, total_seconds=10)  # 5 scenes: chunks of 2, 2 and 1
    tasks.deliver_all(limit=1)  # the storyboard
    keyframes = chunked(tasks, "keyframes")
    assert [t.chunk for t in keyframes] == [0, 1, 2]

    # Spread over instances, and each delivered twice at the same time.
    deliveries = keyframes * 2
    with ThreadPoolExecutor(len(deliveries)) as pool:
        outcomes = list(pool.map(services().pipeline.run, deliveries))
    assert StageOutcome.FAILED not in outcomes
    for task, outcome in zip(deliveries, outcomes, strict=True):
        if outcome is StageOutcome.NOT_READY:  # its twin held the chunk: Cloud Tasks retries
            assert services().pipeline.run(task) is StageOutcome.DONE

    image = holder["image"]
    scenes = project(api, created["id"])["scenes"]
    assert [s["keyframe_state"] for s in scenes] == ["done"] * 5
    frames = [p for s in scenes for p in (s["keyframe_prompt"], s["end_keyframe_prompt"])]
    assert sorted(image.prompts) == sorted(frames)  # every frame made once
    assert image.most <= 5  # the chunks' shares of the bound add up to it
    checkpoints = api.ok("GET", f"/projects/{created['id']}/checkpoints")["items"]
    assert [c["stage"] for c in checkpoints] == ["storyboard", "keyframes"]
    keyframed = api.ok("GET", f"/projects/{created['id']}/checkpoints/{checkpoints[1]['id']}")
    assert [s["keyframe_state"] for s in keyframed["scenes"]] == ["done"] * 5
    assert [t.chunk for t in chunked(tasks, "clips")] == [0, 1, 2]


def test_a_chunk_whose_worker_died_is_the_only_one_the_sweeper_queues_again(
    api: Api, tasks: Tasks, monkeypatch: pytest.MonkeyPatch, sweep: Callable[[], Any]
) -> None:
    monkeypatch.setattr(services().settings.pipeline, "chunk_scenes", 2)
    killing = wrap(monkeypatch, "image", KilledAtScene)
    created = generate(api, total_seconds=10)
    tasks.deliver_all(limit=1)
    scenes = project(api, created["id"])["scenes"]
    first, middle, last = chunked(tasks, "keyframes")
    killing["image"].prompt = scenes[2]["keyframe_prompt"]  # in the middle chunk
    with pytest.raises(SystemExit):
        services().pipeline.run(middle)
    assert services().pipeline.run(first) is StageOutcome.DONE
    assert services().pipeline.run(last) is StageOutcome.DONE
    assert project(api, created["id"])["project"]["status"] == "keyframing"
    tasks.queued.clear()
    age(created["id"])

    assert sweep()["stages_requeued"] == 1
    assert [(t.stage.value, t.chunk) for t in tasks.queued] == [("keyframes", 1)]
    tasks.deliver_all()
    assert project(api, created["id"])["project"]["status"] == "complete"
    calls = killing["image"].calls
    assert calls.count(scenes[0]["keyframe_prompt"]) == 1
    assert calls.count(scenes[2]["keyframe_prompt"]) == 2
    stages = [c["stage"] for c in api.ok("GET", f"/projects/{created['id']}/checkpoints")["items"]]
    assert stages == ["storyboard", "keyframes", "clips", "stitch"]
