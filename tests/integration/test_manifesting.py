"""The manifesting engine (E1–E7) on real photos with the offline models, against the
emulators. The engine runs in-process here; tests/e2e drives it through Cloud Tasks and the
model service."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.clients import firestore_client
from shared.manifesting.engine import ManifestingEngine, Models, RunOutcome
from shared.manifesting.ports import DescribeRequest, DescriptionResult
from shared.models.common import utcnow
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import ManifestRepository
from shared.settings import get_settings
from shared.storage import default_blob_store
from tests.integration.conftest import Api

PHOTOS = Path(".local/sample-photos")
MODELS = Path(".models/offline")
pytestmark = pytest.mark.skipif(
    not (PHOTOS / "t1.jpg").exists() or not (MODELS / "yolov3-tiny.weights").exists(),
    reason="sample photos or offline models missing: run ./scripts/bootstrap",
)


class RecordingDispatcher:
    """Stands in for Cloud Tasks here: the test runs the job itself."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, Any]] = []

    def enqueue(
        self, queue: str, url: str, payload: Any, *, task_id: str, delay_s: float = 0
    ) -> None:
        self.tasks.append((queue, task_id, payload))


@pytest.fixture(scope="session")
def offline_models() -> Models:
    from model_service.factory import build_describer, build_detector, build_faces

    settings = get_settings().models.model_copy(update={"offline_dir": str(MODELS)})
    models = Models(build_detector(settings), build_faces(settings), build_describer(settings))
    models.detector.load()
    models.faces.load()
    return models


@pytest.fixture
def dispatcher(api: Api, monkeypatch: pytest.MonkeyPatch) -> RecordingDispatcher:
    from functions.services import services

    recorder = RecordingDispatcher()
    monkeypatch.setattr(services().manifesting, "_dispatcher", lambda: recorder)
    return recorder


def make_engine(models: Models, **model_settings: Any) -> ManifestingEngine:
    db = firestore_client()
    settings = get_settings()
    return ManifestingEngine(
        ManifestRepository(db),
        JobRepository(db),
        default_blob_store(),
        settings.storage,
        settings.models.model_copy(update=model_settings),
        models,
    )


def upload(api: Api, manifest_id: str, photo: str, asset_type: str = "CHARACTER") -> dict[str, Any]:
    asset = api.asset(manifest_id, asset_type, Path(photo).stem)
    path = f"/manifests/{manifest_id}/assets/{asset['id']}/upload"
    data = (PHOTOS / photo).read_bytes()
    content_type = "image/png" if photo.endswith(".png") else "image/jpeg"
    result = api.ok("POST", path, data={"file": (io.BytesIO(data), photo, content_type)})
    assert result["outcome"] == "attached"
    return result["asset"]  # type: ignore[no-any-return]


def process(api: Api, manifest_id: str, models: Models, **body: Any) -> dict[str, Any]:
    job = api.ok("POST", f"/manifests/{manifest_id}/process", 202, json=body or None)
    assert make_engine(models).run(job["id"]) is RunOutcome.DONE
    return api.ok("GET", f"/jobs/{job['id']}")  # type: ignore[no-any-return]


def detail(api: Api, manifest_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/manifests/{manifest_id}")  # type: ignore[no-any-return]


def test_a_manifest_of_real_photos_becomes_ready_with_crops_faces_and_descriptions(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Street")["id"]
    bus = upload(api, manifest_id, "bus.jpg", "ENVIRONMENT")
    group = upload(api, manifest_id, "t1.jpg")

    job = process(api, manifest_id, offline_models)

    assert job["status"] == "succeeded", job
    assert job["steps_done"] == [
        "contact_sheet",
        "detection",
        "faces",
        "grouping",
        "describe",
        "finalize",
    ]
    assert dispatcher.tasks and dispatcher.tasks[0][0] == "manifesting"
    found = detail(api, manifest_id)
    manifest, assets = found["manifest"], found["assets"]
    assert manifest["status"] == "READY"
    assert manifest["contact_sheet_object"]
    assert manifest["asset_count"] == len(assets)
    crops = [a for a in assets if a["source"] == "extracted"]
    from_bus = [a for a in crops if a["source_asset_id"] == bus["id"]]
    assert any(a["asset_type"] == "VEHICLE" and a["detection_class"] == "bus" for a in from_bus)
    assert sum(a["detection_class"] == "person" for a in from_bus) >= 3
    people = [
        a for a in crops if a["source_asset_id"] == group["id"] and a["asset_type"] == "CHARACTER"
    ]
    assert len(people) >= 4
    with_faces = [a for a in people if a["face_embedding_model"] == "sface-2021dec-int8bq"]
    assert len(with_faces) >= 4
    # Six different people: the crops of the group photo must not collapse into one group.
    assert len({a["face_group_id"] for a in with_faces}) >= 4
    assert all(a["described_by"] == "local-describer-1" and a["reverse_prompt"] for a in assets)
    tags = [a["manifest_tag"] for a in assets]
    assert len(tags) == len(set(tags))
    assert job["counters"]["images_detected"] == 2
    assert job["failures"] == []


def test_the_same_person_in_two_photos_shares_one_group_with_one_primary(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Portraits")["id"]
    first = upload(api, manifest_id, "Tom_Hanks_54745.png")
    second = upload(api, manifest_id, "Tom_Hanks_54745.png")
    other = upload(api, manifest_id, "zidane.jpg")

    process(api, manifest_id, offline_models)

    assets = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    a, b = assets[first["id"]], assets[second["id"]]
    assert a["face_group_id"] is not None
    assert a["face_group_id"] == b["face_group_id"]
    assert a["is_face_group_primary"] != b["is_face_group_primary"]
    zidane_groups = {
        x["face_group_id"]
        for x in assets.values()
        if x["source_asset_id"] == other["id"] and x["face_group_id"]
    }
    assert a["face_group_id"] not in zidane_groups


def test_a_job_delivered_twice_changes_nothing_the_second_time(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Twice")["id"]
    upload(api, manifest_id, "zidane.jpg")
    job = process(api, manifest_id, offline_models)
    before = detail(api, manifest_id)

    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    assert detail(api, manifest_id) == before


class FailingOnce:
    """A describer that dies (as a process would) at its first call."""

    name = "local-describer-1"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def describe(self, request: DescribeRequest) -> DescriptionResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("worker killed")
        return await self.inner.describe(request)  # type: ignore[no-any-return]


def expire_lease(job_id: str) -> None:
    firestore_client().collection("jobs").document(job_id).update(
        {"lease_until": utcnow() - timedelta(seconds=1)}
    )


def test_a_job_killed_halfway_resumes_and_ends_like_a_clean_run(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    clean_id = api.manifest("Clean")["id"]
    upload(api, clean_id, "bus.jpg", "ENVIRONMENT")
    process(api, clean_id, offline_models)
    clean = detail(api, clean_id)

    crashed_id = api.manifest("Crashed")["id"]
    upload(api, crashed_id, "bus.jpg", "ENVIRONMENT")
    job = api.ok("POST", f"/manifests/{crashed_id}/process", 202)
    dying = Models(
        offline_models.detector, offline_models.faces, FailingOnce(offline_models.describer)
    )
    with pytest.raises(RuntimeError, match="worker killed"):
        make_engine(dying).run(job["id"])
    halfway = api.ok("GET", f"/jobs/{job['id']}")
    assert halfway["status"] == "running"
    assert "detection" in halfway["steps_done"]
    # Redelivered while the dead worker's lease is live: refused, to be retried later.
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.BUSY
    expire_lease(job["id"])
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    resumed = detail(api, crashed_id)
    assert api.ok("GET", f"/jobs/{job['id']}")["attempts"] == 2
    assert resumed["manifest"]["status"] == "READY"
    assert sorted(a["manifest_tag"] for a in resumed["assets"]) == sorted(
        a["manifest_tag"] for a in clean["assets"]
    )
    assert resumed["manifest"]["asset_count"] == clean["manifest"]["asset_count"]


def killed_job(api: Api, offline_models: Models, name: str) -> tuple[str, str]:
    """A job whose worker died at its describe step, its task out of retries."""
    manifest_id = api.manifest(name)["id"]
    upload(api, manifest_id, "bus.jpg", "ENVIRONMENT")
    job = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    dying = Models(
        offline_models.detector, offline_models.faces, FailingOnce(offline_models.describer)
    )
    with pytest.raises(RuntimeError, match="worker killed"):
        make_engine(dying).run(job["id"])
    expire_lease(job["id"])
    return manifest_id, job["id"]


def test_a_job_whose_worker_died_is_requeued_by_the_sweeper_once_and_ends_like_a_clean_run(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models, sweep: Callable[[], Any]
) -> None:
    clean_id = api.manifest("Clean")["id"]
    upload(api, clean_id, "bus.jpg", "ENVIRONMENT")
    process(api, clean_id, offline_models)
    manifest_id, job_id = killed_job(api, offline_models, "Killed")
    dispatcher.tasks.clear()

    with ThreadPoolExecutor(3) as pool:  # sweeps may overlap: the job is counted once
        reports = list(pool.map(lambda _: sweep(), range(3)))
    assert sum(r["jobs_requeued"] for r in reports) == 1
    assert [task_id for _, task_id, _ in dispatcher.tasks] == [f"manifesting-{job_id}-q1"]
    assert make_engine(offline_models).run(dispatcher.tasks[0][2].job_id) is RunOutcome.DONE

    job = api.ok("GET", f"/jobs/{job_id}")
    assert (job["status"], job["attempts"], job["requeues"]) == ("succeeded", 2, 1)
    resumed, clean = detail(api, manifest_id), detail(api, clean_id)
    assert resumed["manifest"]["status"] == "READY"
    assert sorted(a["manifest_tag"] for a in resumed["assets"]) == sorted(
        a["manifest_tag"] for a in clean["assets"]
    )
    assert sweep()["jobs_requeued"] == 0


def test_a_job_stuck_past_the_requeue_limit_fails_naming_why(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models, sweep: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from functions.services import services

    monkeypatch.setattr(services().settings.tasks, "max_requeues", 0)
    manifest_id, job_id = killed_job(api, offline_models, "Stuck")

    assert sweep()["jobs_failed"] == 1
    job = api.ok("GET", f"/jobs/{job_id}")
    assert job["status"] == "failed"
    assert "gave up at step describe after 1 unfinished tries" in job["error"]
    manifest = detail(api, manifest_id)["manifest"]
    assert manifest["status"] == "ERROR" and manifest["status_reason"] == job["error"]
    api.ok("POST", f"/manifests/{manifest_id}/process", 202)  # the user can start again


def test_a_corrupt_image_fails_that_asset_and_the_rest_goes_on(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models, settings: Any
) -> None:
    manifest_id = api.manifest("Mixed")["id"]
    good = upload(api, manifest_id, "zidane.jpg")
    broken = upload(api, manifest_id, "bus.jpg", "ENVIRONMENT")
    stored = ManifestRepository(firestore_client()).get_asset(manifest_id, broken["id"])
    assert stored and stored.image
    default_blob_store().put(
        settings.storage.media_bucket, stored.image.object_name, b"garbage", "image/jpeg"
    )

    job = process(api, manifest_id, offline_models)

    assert job["status"] == "succeeded"
    assert [f["asset_id"] for f in job["failures"]] == [broken["id"]]
    assets = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    assert "unreadable" in assets[broken["id"]]["processing_error"]
    assert assets[good["id"]]["described_by"] is not None
    assert detail(api, manifest_id)["manifest"]["status"] == "READY"


def test_a_second_run_processes_only_the_new_upload(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Growing")["id"]
    first = upload(api, manifest_id, "Tom_Hanks_54745.png")
    process(api, manifest_id, offline_models)
    group_before = {a["id"]: a for a in detail(api, manifest_id)["assets"]}[first["id"]][
        "face_group_id"
    ]

    second = upload(api, manifest_id, "Tom_Hanks_54745.png")
    job = process(api, manifest_id, offline_models)

    assert job["counters"]["images_detected"] == 1
    assets = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    assert (
        assets[second["id"]]["face_group_id"]
        == group_before
        == assets[first["id"]]["face_group_id"]
    )


def test_reprocessing_one_asset_replaces_only_its_own_crops(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Redo")["id"]
    bus = upload(api, manifest_id, "bus.jpg", "ENVIRONMENT")
    other = upload(api, manifest_id, "zidane.jpg")
    process(api, manifest_id, offline_models)
    before = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    other_crops = {i for i, a in before.items() if a["source_asset_id"] == other["id"]}

    job = api.ok("POST", f"/manifests/{manifest_id}/assets/{bus['id']}/reprocess", 202)
    assert job["asset_ids"] == [bus["id"]]
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    after = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    assert {i for i, a in after.items() if a["source_asset_id"] == other["id"]} == other_crops
    assert all(after[i]["manifest_tag"] == before[i]["manifest_tag"] for i in other_crops)
    bus_crops = [a for a in after.values() if a["source_asset_id"] == bus["id"]]
    assert bus_crops
    old_tags = {a["manifest_tag"] for a in before.values()}
    assert all(a["manifest_tag"] not in old_tags for a in bus_crops)  # tags are never reused


def test_starting_twice_answers_the_running_job(api: Api, dispatcher: RecordingDispatcher) -> None:
    manifest_id = api.manifest("Busy")["id"]
    upload(api, manifest_id, "zidane.jpg")
    first = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    second = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    assert first["id"] == second["id"]
    assert api.ok("GET", f"/manifests/{manifest_id}/progress")["id"] == first["id"]
    assert api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["status"] == "PROCESSING"


def test_processing_a_manifest_without_images_is_a_conflict(
    api: Api, dispatcher: RecordingDispatcher
) -> None:
    manifest_id = api.manifest("Empty")["id"]
    api.asset(manifest_id)
    response = api.call("POST", f"/manifests/{manifest_id}/process")
    assert response.status_code == 409
    assert "no asset of this manifest has an image" in response.get_json()["error"]["message"]


def test_someone_elses_job_is_not_found(api: Api, dispatcher: RecordingDispatcher) -> None:
    manifest_id = api.manifest("Mine")["id"]
    upload(api, manifest_id, "zidane.jpg")
    job = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    assert api.call("GET", f"/jobs/{job['id']}", user="mallory").status_code == 404


class RefusingFor:
    """A describer that gives up on one kind of asset, as Gemini may after its retries."""

    name = "local-describer-1"

    def __init__(self, inner: Any, asset_type: str) -> None:
        self.inner, self.asset_type = inner, asset_type

    async def describe(self, request: DescribeRequest) -> DescriptionResult:
        from shared.manifesting.ports import DescriberError

        if request.asset_type.value == self.asset_type:
            raise DescriberError("quota exhausted after 5 attempts")
        return await self.inner.describe(request)  # type: ignore[no-any-return]


def test_a_reverse_prompt_that_fails_is_recorded_and_the_rest_are_described(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Partial")["id"]
    upload(api, manifest_id, "zidane.jpg")
    job = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    models = Models(
        offline_models.detector,
        offline_models.faces,
        RefusingFor(offline_models.describer, "OBJECT"),
    )

    assert make_engine(models).run(job["id"]) is RunOutcome.DONE

    done = api.ok("GET", f"/jobs/{job['id']}")
    assets = detail(api, manifest_id)["assets"]
    objects = [a for a in assets if a["asset_type"] == "OBJECT"]
    assert objects, "the tie in zidane.jpg should make an OBJECT crop"
    assert {f["asset_id"] for f in done["failures"]} == {a["id"] for a in objects}
    assert all(
        "quota exhausted" in a["processing_error"] and a["reverse_prompt"] is None for a in objects
    )
    assert all(a["reverse_prompt"] for a in assets if a["asset_type"] != "OBJECT")
    assert detail(api, manifest_id)["manifest"]["status"] == "READY"


def test_a_manifest_whose_every_image_is_unreadable_ends_in_error_with_the_reason(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models, settings: Any
) -> None:
    manifest_id = api.manifest("Broken")["id"]
    broken = upload(api, manifest_id, "zidane.jpg")
    stored = ManifestRepository(firestore_client()).get_asset(manifest_id, broken["id"])
    assert stored and stored.image
    default_blob_store().delete(settings.storage.media_bucket, stored.image.object_name)

    job = process(api, manifest_id, offline_models)

    manifest = detail(api, manifest_id)["manifest"]
    assert job["status"] == "succeeded"
    assert manifest["status"] == "ERROR"
    assert "no image could be processed" in manifest["status_reason"]


class Stamping:
    """A describer whose text says which run wrote it."""

    name = "local-describer-1"

    def __init__(self, inner: Any, stamp: str) -> None:
        self.inner, self.stamp = inner, stamp

    async def describe(self, request: DescribeRequest) -> DescriptionResult:
        result = await self.inner.describe(request)
        d = result.description
        stamped = d.model_copy(
            update={
                "reverse_prompt": f"{d.reverse_prompt} [{self.stamp}]",
                "visual_description": f"{d.visual_description} [{self.stamp}]",
            }
        )
        return dataclasses.replace(result, description=stamped)


def test_text_the_user_wrote_survives_processing_until_a_reprocess_overwrites_it(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    manifest_id = api.manifest("Edited")["id"]
    player = upload(api, manifest_id, "zidane.jpg")
    process(api, manifest_id, offline_models)
    path = f"/manifests/{manifest_id}/assets/{player['id']}"
    mine = "a footballer in a white kit under stadium lights"
    api.ok("PATCH", path, json={"reverse_prompt": mine})

    second = Models(
        offline_models.detector, offline_models.faces, Stamping(offline_models.describer, "run 2")
    )
    job = process(api, manifest_id, second, full=True)

    assert job["status"] == "succeeded" and job["overwrite_edited_text"] is False
    assets = {a["id"]: a for a in detail(api, manifest_id)["assets"]}
    kept = assets[player["id"]]
    assert kept["reverse_prompt"] == mine
    assert kept["user_edited"] == ["reverse_prompt"]
    # The describer still ran on it: the field the user left alone, the score and name are its.
    assert kept["visual_description"].endswith("[run 2]")
    assert kept["described_by"] == "local-describer-1" and kept["quality_score"] is not None
    crops = [a for a in assets.values() if a["source_asset_id"] == player["id"]]
    assert crops
    assert all(a["reverse_prompt"].endswith("[run 2]") and not a["user_edited"] for a in crops)

    job = api.ok("POST", f"{path}/reprocess", 202, json={"overwrite_edited_text": True})
    assert job["overwrite_edited_text"] is True
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    replaced = api.ok("GET", path)
    assert replaced["reverse_prompt"] and replaced["reverse_prompt"] != mine
    assert not replaced["visual_description"].endswith("[run 2]")
    assert replaced["user_edited"] == []
