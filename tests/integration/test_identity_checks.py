"""The identity check inside the keyframes stage, against the emulators, with the faces API
stood in for: what is recorded when the model service cannot answer, and what a redelivered
or continued stage asks again (nothing it asked before). The real model service is exercised
in tests/e2e/test_identity_checks.py."""

from __future__ import annotations

from typing import Any

import pytest

from functions.services import services
from shared.clients import firestore_client
from shared.models.projects import Scene
from shared.pipeline.face_service import FacesUnavailable, FoundFace
from shared.pipeline.identity import IdentityChecks
from shared.pipeline.runner import StageOutcome
from shared.repositories.projects import ProjectRepository
from shared.settings import IdentitySettings
from tests.integration.conftest import Api
from tests.integration.test_pipeline import Tasks, generate, project, ready_manifest
from tests.integration.test_pipeline import tasks as tasks

ADA = [1.0, 0.0, 0.0, 0.0]


class Faces:
    """The faces API: Ada's face in every keyframe, or no answer at all."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.calls = 0

    async def faces(self, image: bytes, content_type: str) -> list[FoundFace]:
        self.calls += 1
        if self.down:
            raise FacesUnavailable("the model service is unavailable (ConnectError)")
        return [FoundFace(embedding=[0.9, 0.1, 0.0, 0.0], model="sface-test", confidence=0.9)]

    async def aclose(self) -> None:
        pass


@pytest.fixture
def faces(api: Api, monkeypatch: pytest.MonkeyPatch) -> Faces:
    stand_in = Faces()
    pipeline = services().pipeline
    checks = IdentityChecks(
        IdentitySettings(model_service_url="http://faces.invalid"), services().blobs,
        services().settings.storage.media_bucket, pipeline.index, lambda: stand_in,
    )  # fmt: skip
    monkeypatch.setattr(pipeline, "identity", checks)
    return stand_in


def staged_with_ada(api: Api, tasks: Tasks) -> str:
    """A project whose scenes all place Ada, whose face the manifest knows, staged after its
    storyboard."""
    manifest_id, hero = ready_manifest(api)
    firestore_client().collection("manifests").document(manifest_id).collection("assets").document(
        hero["id"]
    ).update({"face_group_id": "g-ada", "face_embedding": {"model": "sface-test", "vector": ADA}})
    pid: str = generate(api, manifest_id=manifest_id, run_through="storyboard")["id"]
    tasks.deliver_all()
    repo = ProjectRepository(firestore_client())
    repo.put_scenes(pid, [
        Scene.model_validate({**s.model_dump(), "asset_tags": [hero["manifest_tag"]],
                              "reference_asset_ids": [hero["id"]]})
        for s in repo.scenes(pid)
    ])  # fmt: skip
    return pid


def test_keyframes_the_model_service_cannot_check_are_flagged_unchecked_never_passed(
    api: Api, tasks: Tasks, faces: Faces
) -> None:
    faces.down = True
    pid = staged_with_ada(api, tasks)

    api.ok("POST", f"/projects/{pid}/resume")
    tasks.deliver_all()

    done = project(api, pid)
    assert done["project"]["status"] == "complete"  # the video is made; the scenes are flagged
    assert done["project"]["identity_review"] == [0, 1, 2]
    for scene in done["scenes"]:
        identity = scene["identity"]
        assert (identity["verdict"], identity["review"]) == ("unchecked", True)
        assert identity["reason"].startswith("unchecked: the model service is unavailable")
        assert all(f["rerolls"] == 0 for f in identity["frames"].values())  # no blind re-rolls


def test_a_redelivered_or_continued_stage_asks_nothing_it_asked_before(
    api: Api, tasks: Tasks, faces: Faces
) -> None:
    pid = staged_with_ada(api, tasks)
    api.ok("POST", f"/projects/{pid}/resume")
    keyframes = tasks.queued[0]

    assert services().pipeline.run(keyframes) is StageOutcome.DONE
    asked = faces.calls
    assert asked == 6  # three scenes, two keyframes each
    assert services().pipeline.run(keyframes) is StageOutcome.DONE  # a redelivery
    assert faces.calls == asked
    tasks.deliver_all()
    done = project(api, pid)
    assert [s["identity"]["verdict"] for s in done["scenes"]] == ["pass"] * 3
    assert all(s["identity"]["score"] == pytest.approx(0.9939, abs=1e-3) for s in done["scenes"])
    assert done["project"]["identity_review"] == []
    assert done["project"]["cost"]["identity_checks"] == 6

    # Continued from the storyboard: the same keyframes, the same faces: from the index.
    checkpoints: Any = api.ok("GET", f"/projects/{pid}/checkpoints")["items"]
    storyboard = next(c["id"] for c in checkpoints if c["stage"] == "storyboard")
    api.ok("POST", f"/projects/{pid}/checkpoints/{storyboard}/continue", 202,
           json={"auto_continue": True, "new_branch": True})  # fmt: skip
    tasks.deliver_all()
    again = project(api, pid)
    assert faces.calls == asked
    assert all(f["reused"] for s in again["scenes"] for f in s["identity"]["frames"].values())
    assert again["project"]["cost"]["identity_checks"] == 0
