"""The manifesting job's own I/O: each image read once, the crops it makes never read back, and
a number of manifest document writes that does not follow the number of batches; results held
back for those few writes are not lost to a crash."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.clients import firestore_client
from shared.manifesting import engine as engine_module
from shared.manifesting.engine import Models, RunOutcome
from shared.models.assets import AssetSource
from shared.repositories.manifests import ManifestRepository
from shared.storage import default_blob_store
from tests.integration.conftest import Api
from tests.integration.test_manifesting import (
    RecordingDispatcher,
    detail,
    expire_lease,
    make_engine,
    upload,
)
from tests.integration.test_manifesting import dispatcher as dispatcher
from tests.integration.test_manifesting import offline_models as offline_models
from tests.integration.test_manifesting import pytestmark as pytestmark


class CountingBlobs:
    def __init__(self) -> None:
        self.inner = default_blob_store()
        self.reads: list[str] = []
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, bucket: str, name: str, **kwargs: Any) -> bytes | None:
        self.reads.append(name)
        return self.inner.get(bucket, name, **kwargs)

    def put(self, bucket: str, name: str, *args: Any) -> Any:
        result = self.inner.put(bucket, name, *args)
        self.writes.append(name)
        return result


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Summaries of the guarded writes (each one a write of the manifest document)."""
    made: list[str] = []
    commit = ManifestRepository._commit

    def counted(self: ManifestRepository, current: Any, planned: Any, *args: Any) -> None:
        made.append(planned.summary)
        commit(self, current, planned, *args)

    monkeypatch.setattr(ManifestRepository, "_commit", counted)
    return made


def test_a_job_reads_each_image_once_and_writes_the_manifest_once_per_step_at_most(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models, commits: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    manifest_id = api.manifest("Lean")["id"]
    upload(api, manifest_id, "bus.jpg", "ENVIRONMENT")
    upload(api, manifest_id, "t1.jpg")
    upload(api, manifest_id, "zidane.jpg")
    # One image per model call, many batches; no write is due by time in a test this short.
    monkeypatch.setattr(engine_module, "BATCH", 1)
    monkeypatch.setattr(engine_module, "FLUSH_INTERVAL_S", 3600.0)
    job = api.ok("POST", f"/manifests/{manifest_id}/process", 202)
    commits.clear()
    engine = make_engine(offline_models)
    blobs = CountingBlobs()
    engine._blobs = blobs

    assert engine.run(job["id"]) is RunOutcome.DONE

    assets = ManifestRepository(firestore_client()).list_assets(manifest_id)
    uploads = {a.image.object_name for a in assets if a.source is AssetSource.UPLOADED and a.image}
    crops = [a for a in assets if a.source is AssetSource.EXTRACTED]
    assert len(crops) >= 8
    assert sorted(blobs.reads) == sorted(uploads)  # crops are never read back
    # Sheet, detection, faces, grouping, reverse prompts, the end: one write each.
    assert len(commits) == 6, commits


class DyingOnCall:
    """A detector that dies (as a process would) at its third call; before its second, it
    waits for the first photo's crops to be stored (image and thumbnail each)."""

    def __init__(self, inner: Any, blobs: CountingBlobs, first_crops: int) -> None:
        self.inner, self.blobs, self.first_crops, self.calls = inner, blobs, first_crops, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def detect(self, images: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            deadline = time.monotonic() + 30
            while len(self.blobs.writes) < 2 * self.first_crops and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.calls == 3:
            raise RuntimeError("worker killed")
        return self.inner.detect(images)


def test_a_job_killed_with_results_held_back_resumes_with_the_tags_of_a_clean_run(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    photos = [("bus.jpg", "ENVIRONMENT"), ("t1.jpg", "CHARACTER"), ("zidane.jpg", "CHARACTER")]
    monkeypatch.setattr(engine_module, "BATCH", 1)
    clean_id = api.manifest("Clean")["id"]
    for photo, kind in photos:
        upload(api, clean_id, photo, kind)
    job = api.ok("POST", f"/manifests/{clean_id}/process", 202)
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    crashed_id = api.manifest("Crashed")["id"]
    for photo, kind in photos:
        upload(api, crashed_id, photo, kind)
    job = api.ok("POST", f"/manifests/{crashed_id}/process", 202)
    # Due by time after every batch: the first photo's crops land once stored, the second's
    # are held back (still being stored) when the worker dies at the third photo.
    monkeypatch.setattr(engine_module, "FLUSH_INTERVAL_S", 0.0)
    clean = detail(api, clean_id)["assets"]
    first = next(a["id"] for a in clean if a["source"] == "uploaded")
    # The whole-scene asset shares its source's image: nothing of it is stored.
    first_crops = sum(a["source_asset_id"] == first and not a["id"].endswith("-scene")
                      for a in clean)  # fmt: skip
    blobs = CountingBlobs()
    detector = DyingOnCall(offline_models.detector, blobs, first_crops)
    engine = make_engine(Models(detector, offline_models.faces, offline_models.describer))
    engine._blobs = blobs
    with pytest.raises(RuntimeError, match="worker killed"):
        engine.run(job["id"])
    halfway = detail(api, crashed_id)["assets"]
    sources = [a["id"] for a in halfway if a["source"] == "uploaded"]
    landed = {a["source_asset_id"] for a in halfway if a["source"] == "extracted"}
    assert sources[0] in landed and sources[2] not in landed
    expire_lease(job["id"])
    assert make_engine(offline_models).run(job["id"]) is RunOutcome.DONE

    def tags(manifest_id: str) -> list[tuple[str, str]]:
        """(which upload, which derivation) → tag: asset ids differ between manifests."""
        assets = detail(api, manifest_id)["assets"]
        uploads = [a["id"] for a in assets if a["source"] == "uploaded"]
        keys = {upload_id: str(position) for position, upload_id in enumerate(uploads)}
        for a in assets:
            if a["source_asset_id"]:
                source = a["source_asset_id"]
                keys[a["id"]] = keys[source] + a["id"].removeprefix(source)
        return sorted((keys[a["id"]], a["manifest_tag"]) for a in assets)

    assert tags(crashed_id) == tags(clean_id)
    clean, resumed = detail(api, clean_id)["manifest"], detail(api, crashed_id)["manifest"]
    assert resumed["asset_count"] == clean["asset_count"]
    assert resumed["tag_counters"] == clean["tag_counters"]
    assert resumed["status"] == "READY"
