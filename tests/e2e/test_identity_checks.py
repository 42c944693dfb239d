"""The identity check of keyframes through the whole stack: run_stage asks the real model
service (YuNet + SFace, offline) for the faces in each keyframe the local provider composes
from the reference crops, and compares them with the characters' faces in the manifest.

One manifest of two people (a portrait of each, processed by the model service) and one
project serve every test: processing and a video take seconds each here."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from shared.clients import firestore_client
from shared.models.projects import Scene
from shared.repositories.projects import ProjectRepository

pytestmark = pytest.mark.e2e

PHOTOS = Path(".local/sample-photos")
ZIDANE_FACE = (846, 30, 1123, 344)
"""Around the face of the man on the right in zidane.jpg: a portrait of someone else."""


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "PNG")
    return out.getvalue()


def wait(check: Any, seconds: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cast(local_stack: Any) -> dict[str, Any]:
    """A READY manifest: CHAR_01 a portrait of one man, CHAR_02 a portrait of another."""
    if not (PHOTOS / "Tom_Hanks_54745.png").exists():
        pytest.skip("sample photos missing: run ./scripts/bootstrap")
    base = local_stack.api_url
    mid = requests.post(f"{base}/manifests", json={"name": "Two people"}, timeout=30).json()["id"]
    other = png(Image.open(PHOTOS / "zidane.jpg").crop(ZIDANE_FACE))
    people = {}
    for name, data in (("Tom", (PHOTOS / "Tom_Hanks_54745.png").read_bytes()), ("Zin", other)):
        asset = requests.post(f"{base}/manifests/{mid}/assets", timeout=30,
                              json={"asset_type": "CHARACTER", "name": name}).json()  # fmt: skip
        uploaded = requests.post(f"{base}/manifests/{mid}/assets/{asset['id']}/upload",
                                 files={"file": (f"{name}.png", data, "image/png")}, timeout=30)  # fmt: skip
        assert uploaded.status_code in (200, 201), uploaded.text
        people[name] = asset
    job = requests.post(f"{base}/manifests/{mid}/process", json={}, timeout=30).json()
    wait(lambda: requests.get(f"{base}/jobs/{job['id']}", timeout=30).json()["status"]
         in ("succeeded", "failed"), what="manifesting")  # fmt: skip
    assets = requests.get(f"{base}/manifests/{mid}", timeout=30).json()["assets"]
    by_id = {a["id"]: a for a in assets}
    for person in people.values():
        assert by_id[person["id"]]["face_group_id"], by_id[person["id"]]
    assert (
        by_id[people["Tom"]["id"]]["face_group_id"] != by_id[people["Zin"]["id"]]["face_group_id"]
    )
    return {"manifest_id": mid, "tom": by_id[people["Tom"]["id"]],
            "zin": by_id[people["Zin"]["id"]], "zin_png": other}  # fmt: skip


@pytest.fixture(scope="module")
def video(local_stack: Any, cast: dict[str, Any]) -> dict[str, Any]:
    """Two scenes placing CHAR_01: scene 0 with his portrait as the reference, scene 1 with
    the other man's (references swapped, as a bad reference choice would), run to the end."""
    base = local_stack.api_url
    created = requests.post(f"{base}/generate", timeout=30, json={
        "prompt": "a man waits at a bus stop", "manifest_id": cast["manifest_id"],
        "clip_seconds": 2, "total_seconds": 4, "run_through": "storyboard",
    }).json()  # fmt: skip
    pid = created["id"]
    wait(lambda: requests.get(f"{base}/projects/{pid}", timeout=30).json()["project"]["status"]
         == "staged", what="the storyboard")  # fmt: skip
    # No API edit sets references by hand (they follow the tags), so the test writes them.
    repo = ProjectRepository(firestore_client())
    tom, zin = cast["tom"], cast["zin"]
    scenes = [
        Scene.model_validate({**s.model_dump(), "asset_tags": [tom["manifest_tag"]],
                              "reference_asset_ids": [(tom if s.index == 0 else zin)["id"]]})
        for s in repo.scenes(pid)
    ]  # fmt: skip
    repo.put_scenes(pid, scenes)
    assert requests.post(f"{base}/projects/{pid}/resume", timeout=30).status_code == 200

    def complete() -> dict[str, Any] | None:
        detail = requests.get(f"{base}/projects/{pid}", timeout=30).json()
        assert detail["project"]["status"] != "failed", detail["project"]["error"]
        return detail if detail["project"]["status"] == "complete" else None

    return {"id": pid, **wait(complete, what="the video")}


def test_keyframes_composed_from_the_characters_crops_pass(video: dict[str, Any]) -> None:
    identity = video["scenes"][0]["identity"]

    assert identity["verdict"] == "pass", identity
    assert identity["review"] is False
    assert identity["score"] >= 0.6
    assert set(identity["frames"]) == {"start_frame", "end_frame"}
    assert all(f["rerolls"] == 0 and f["faces"] >= 1 for f in identity["frames"].values())
    [character] = identity["characters"]
    assert (character["tag"], character["verdict"]) == ("CHAR_01", "pass")


def test_a_scene_with_another_persons_references_is_rerolled_then_flagged(
    local_stack: Any, video: dict[str, Any]
) -> None:
    identity = video["scenes"][1]["identity"]
    project = video["project"]

    assert identity["verdict"] == "below_threshold", identity
    assert identity["review"] is True
    assert identity["score"] < 0.36
    assert all(f["rerolls"] == 1 for f in identity["frames"].values())
    assert project["identity_review"] == [1]
    checkpoints = requests.get(f"{local_stack.api_url}/projects/{video['id']}/checkpoints",
                               timeout=30).json()["items"]  # fmt: skip
    keyframes = next(c for c in checkpoints if c["stage"] == "keyframes")
    assert keyframes["identity_review"] == [1]
    # Two keyframes per scene, and a re-roll of each of scene 1's: six checks, on the ledger.
    assert project["cost"]["identity_checks"] == 6
    assert project["cost"]["identity_check_s"] > 0


def test_an_uploaded_keyframe_showing_someone_else_is_flagged(
    local_stack: Any, cast: dict[str, Any], video: dict[str, Any]
) -> None:
    base, pid = local_stack.api_url, video["id"]
    checkpoints = requests.get(f"{base}/projects/{pid}/checkpoints", timeout=30).json()["items"]
    keyframes = next(c for c in checkpoints if c["stage"] == "keyframes")["id"]

    uploaded = requests.post(
        f"{base}/projects/{pid}/checkpoints/{keyframes}/scenes/0/keyframe",
        files={"file": ("other.png", cast["zin_png"], "image/png")}, data={"frame": "start"},
        timeout=60,
    )  # fmt: skip

    assert uploaded.status_code in (200, 201), uploaded.text
    identity = uploaded.json()["identity"]
    assert identity["review"] is True
    assert identity["frames"]["start_frame"]["uploaded"] is True
    assert identity["frames"]["start_frame"]["verdict"] == "below_threshold"
    assert identity["frames"]["start_frame"]["rerolls"] == 0
    assert identity["frames"]["end_frame"]["verdict"] == "pass"  # the stage's, as it was
    detail = requests.get(f"{base}/projects/{pid}/checkpoints/{keyframes}", timeout=30).json()
    assert detail["identity_review"] == [0, 1]
    assert requests.get(f"{base}/projects/{pid}", timeout=30).json()["project"][
        "identity_review"
    ] == [0, 1]
