"""Forks (F1–F3) over the API: a finished project forked with changes makes again exactly
what the changes touch, as its preview said; the source is never changed."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest

from shared.clients import firestore_client
from shared.manifesting.engine import Models, RunOutcome
from shared.models.common import utcnow
from shared.pipeline.runner import StageOutcome
from tests.integration.conftest import Api, image_bytes
from tests.integration.test_manifesting import (
    PHOTOS,
    RecordingDispatcher,
    make_engine,
    process,
)
from tests.integration.test_manifesting import dispatcher as dispatcher
from tests.integration.test_manifesting import offline_models as offline_models
from tests.integration.test_manifesting import upload as upload_photo
from tests.integration.test_pipeline import Tasks, generate, project
from tests.integration.test_pipeline import tasks as tasks
from tests.integration.test_provenance import Calls, finished
from tests.integration.test_provenance import calls as calls

NOTHING = {"text": 0, "image": 0, "video": 0, "stitch": 0}


def fork(api: Api, pid: str, status: int = 202, **body: Any) -> Any:
    return api.ok("POST", f"/projects/{pid}/forks", status, json=body)


def preview(api: Api, pid: str, **body: Any) -> Any:
    return api.ok("POST", f"/projects/{pid}/forks/preview", json=body)


def by_stage(plan: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {s["stage"]: (s["reuse"], s["make"]) for s in plan["stages"]}


def documents(pid: str) -> dict[str, Any]:
    """Everything stored of a project and its snapshot, to compare before and after a fork."""
    db = firestore_client()
    ref = db.collection("projects").document(pid)
    snapshot = db.collection("manifest_snapshots").document(pid)
    found = {"project": ref.get().to_dict(), "snapshot": snapshot.get().to_dict()}
    for sub in ("scenes", "checkpoints", "drafts", "artifacts"):
        found[sub] = sorted((d.id, d.to_dict()) for d in ref.collection(sub).stream())
    found["snapshot assets"] = sorted(
        (d.id, d.to_dict()) for d in snapshot.collection("assets").stream()
    )
    return found


def cast(api: Api) -> tuple[str, dict[str, dict[str, Any]]]:
    """A READY manifest of two people with photos and a described place; CHAR_03 was issued
    and deleted before the video, so its tag is never issued again."""
    mid = api.manifest("Cast")["id"]
    assets = {}
    for name, colour in (("Ada", (200, 40, 40)), ("Ben", (40, 40, 200)), ("Gone", (9, 9, 9))):
        asset = api.asset(mid, "CHARACTER", name)
        api.ok("POST", f"/manifests/{mid}/assets/{asset['id']}/upload",
               data={"file": (io.BytesIO(image_bytes(colour=colour)), "p.jpg", "image/jpeg")})  # fmt: skip
        assets[name] = asset
    api.ok("DELETE", f"/manifests/{mid}/assets/{assets.pop('Gone')['id']}", 204)
    assets["Lighthouse"] = api.asset(mid, "ENVIRONMENT", "Lighthouse")
    db = firestore_client().collection("manifests").document(mid)
    db.collection("assets").document(assets["Lighthouse"]["id"]).update(
        {"reverse_prompt": "a white lighthouse on a black rock"}
    )
    db.update({"status": "READY"})
    return mid, assets


def test_a_fork_with_one_scene_edited_remakes_that_scene_and_leaves_the_source_as_it_was(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    source = finished(api, tasks)
    stored = documents(source)
    calls.reset()
    body = {"name": "Second take", "scene_edits": {"1": {
        "keyframe_prompt": "the bottle washes up at dawn", "end_keyframe_prompt": "the cork is out"}}}  # fmt: skip

    previewed = preview(api, source, **body)
    assert by_stage(previewed["plan"]) == {"keyframes": (6, 2), "clips": (3, 1), "stitch": (0, 1)}
    assert previewed["storyboard"] == "reuse" and previewed["assets"] is None
    assert documents(source) == stored, "a preview writes nothing"
    forked = fork(api, source, **body)
    assert forked["preview"] == previewed
    assert (forked["forked_from"], forked["branch"], forked["name"]) == (
        source,
        "main",
        "Second take",
    )
    assert (
        forked["forked_from_checkpoint"] == project(api, source)["project"]["current_checkpoint_id"]
    )
    tasks.deliver_all()

    assert calls.counts() == {"text": 0, "image": 2, "video": 1, "stitch": 1}
    done = project(api, forked["id"])
    assert done["project"]["status"] == "complete"
    assert [bool(s["reused_from"]) for s in done["scenes"]] == [True, False, True, True]
    assert done["scenes"][0]["reused_from"]["clip"]["project_id"] == source
    assert documents(source) == stored
    listed = api.ok("GET", f"/projects/{source}/forks")["items"]
    assert [p["id"] for p in listed] == [forked["id"]]
    checkpoints = api.ok("GET", f"/projects/{forked['id']}/checkpoints")["items"]
    assert [(c["stage"], c["branch"]) for c in checkpoints] == [
        ("storyboard", "main"), ("keyframes", "main"), ("clips", "main"), ("stitch", "main"),
    ]  # fmt: skip


def test_a_deleted_scene_remakes_only_the_stitch_and_cleared_keyframes_remake_their_scene(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    source = finished(api, tasks)
    calls.reset()
    shorter = fork(api, source, deleted_scenes=[2])
    assert by_stage(shorter["preview"]["plan"]) == {
        "keyframes": (6, 0), "clips": (3, 0), "stitch": (0, 1)
    }  # fmt: skip
    assert (shorter["scene_count"], shorter["total_seconds"]) == (3, 6)
    tasks.deliver_all()
    assert calls.counts() == {**NOTHING, "stitch": 1}

    calls.reset()
    cleared = fork(api, source, clear_keyframes=[3])
    assert by_stage(cleared["preview"]["plan"]) == {
        "keyframes": (6, 2), "clips": (3, 1), "stitch": (0, 1)
    }  # fmt: skip
    tasks.deliver_all()
    assert calls.counts() == {"text": 0, "image": 2, "video": 1, "stitch": 1}


def test_model_overrides_remake_what_those_models_make_and_are_priced_in_the_preview(
    api: Api, tasks: Tasks
) -> None:
    source = generate(api, clip_seconds=4, total_seconds=16)["id"]  # 4 scenes Veo can make
    tasks.deliver_all()
    image = preview(api, source, overrides={"image_model": "gemini-2.5-flash-image"})
    assert by_stage(image["plan"]) == {"keyframes": (0, 8), "clips": (0, 4), "stitch": (0, 1)}
    assert image["plan"]["cost_usd"] > 0
    video = preview(api, source, overrides={"video_model": "veo-3.0-fast-generate-001"})
    assert by_stage(video["plan"]) == {"keyframes": (8, 0), "clips": (0, 4), "stitch": (0, 1)}
    assert video["plan"]["cost_usd"] == pytest.approx(4 * 4 * 0.10)
    wrong = api.call("POST", f"/projects/{source}/forks/preview",
                     json={"overrides": {"video_model": "veo-2.0-generate-001"}})  # fmt: skip
    assert wrong.status_code == 422 and "5, 6, 7, 8" in wrong.get_json()["error"]["message"]
    story = preview(api, source, overrides={"prompt": "a storm keeps the keeper awake"})
    assert story["storyboard"] == "make"


def test_a_modified_reverse_prompt_remakes_exactly_the_scenes_that_place_its_asset(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    mid, assets = cast(api)
    source = finished(api, tasks, manifest_id=mid)
    stored = documents(source)
    parent = api.ok("GET", f"/manifests/{mid}")
    scenes = project(api, source)["scenes"]
    tags = {"CHAR_01": "Ada", "CHAR_02": "Ben", "ENV_01": "Lighthouse"}
    tag = next(t for t in tags if 0 < sum(t in s["asset_tags"] for s in scenes) < len(scenes))
    placing = [s["index"] for s in scenes if tag in s["asset_tags"]]
    asset_id = assets[tags[tag]]["id"]
    calls.reset()

    forked = fork(api, source, asset_changes={"modified_assets": {
        asset_id: {"reverse_prompt": "seen from the sea, in a storm"}}})  # fmt: skip
    assert forked["preview"]["assets"] == {"inherited": 2, "modified": 1, "removed": 0, "new": 0}
    made = sorted({s["scene"] for s in forked["preview"]["plan"]["steps"]
                   if s["action"] == "make" and s["stage"] == "keyframes"})  # fmt: skip
    assert made == placing
    tasks.deliver_all()

    n = len(placing)
    assert calls.counts() == {"text": 0, "image": 2 * n, "video": n, "stitch": 1}
    assert all("seen from the sea" in r.prompt for r in calls.image)
    assert documents(source) == stored
    child = api.ok("GET", f"/manifests/{forked['manifest_id']}")
    assert child["manifest"]["parent_manifest_id"] == mid
    copies = {a["id"]: a for a in child["assets"]}
    assert copies[asset_id]["is_inherited"] is False
    assert copies[asset_id]["modified_fields"] == ["reverse_prompt"]
    others = [a for i, a in copies.items() if i != asset_id]
    assert all(a["is_inherited"] and a["inherited_from_project"] == source for a in others)

    def objects(manifest_id: str) -> dict[str, str]:
        ref = firestore_client().collection("manifests").document(manifest_id)
        docs = [d.to_dict() or {} for d in ref.collection("assets").stream()]
        return {d["id"]: d["image"]["object_name"] for d in docs if d.get("image")}

    assert objects(forked["manifest_id"]) == objects(mid), "images shared, never copied"
    assert api.ok("GET", f"/manifests/{mid}") == parent
    new = api.ok("POST", f"/manifests/{forked['manifest_id']}/assets", 201,
                 json={"asset_type": "CHARACTER", "name": "Cal"})  # fmt: skip
    assert new["manifest_tag"] == "CHAR_04", "CHAR_03 was issued in the parent before the fork"


def test_a_removed_asset_leaves_its_scenes_which_are_made_again(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    mid, assets = cast(api)
    ada, ben, place = (assets[n]["id"] for n in ("Ada", "Ben", "Lighthouse"))
    links = [{"id": "l1", "asset_a": ada, "asset_b": ben, "kind": "different"},
             {"id": "l2", "asset_a": ada, "asset_b": place, "kind": "same"}]  # fmt: skip
    firestore_client().collection("manifests").document(mid).update({"face_links": links})
    source = finished(api, tasks, manifest_id=mid)
    scenes = project(api, source)["scenes"]
    placing = [s["index"] for s in scenes if "CHAR_02" in s["asset_tags"]]
    assert placing
    calls.reset()

    forked = fork(api, source, asset_changes={"removed_asset_ids": [assets["Ben"]["id"]]})
    assert forked["preview"]["assets"]["removed"] == 1
    tasks.deliver_all()
    done = project(api, forked["id"])["scenes"]
    assert all("CHAR_02" not in s["asset_tags"] for s in done)
    assert all(assets["Ben"]["id"] not in s["reference_asset_ids"] for s in done)
    remade = sorted({r.prompt for r in calls.image})
    assert len(calls.image) == 2 * len(placing) == len(remade)
    contexts = [r.prompt.partition("\nAs established — ")[2] for r in calls.image]
    assert all("CHAR_02" not in c for c in contexts), "the context is rebuilt without Ben"
    # The person's face links come along, less those of the removed asset.
    forked_manifest = project(api, forked["id"])["project"]["manifest_id"]
    kept = api.ok("GET", f"/manifests/{forked_manifest}/face-links")["items"]
    assert [(x["id"], x["asset_a"], x["asset_b"]) for x in kept] == [("l2", ada, place)]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"scene_edits": {"9": {"title": "x"}}}, 422, "no scene 9"),
        ({"deleted_scenes": [0, 1, 2, 3]}, 422, "one scene at least"),
        ({"asset_changes": {"removed_asset_ids": ["abc"]}}, 422, "without a manifest"),
        ({"overrides": {"prompt": "new words"}, "deleted_scenes": [1]}, 422, "new storyboard"),
        ({"from_checkpoint": "nope"}, 404, "does not exist"),
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_a_fork_that_cannot_be_made_is_refused_clearly(
    api: Api, tasks: Tasks, body: dict[str, Any], status: int, words: str
) -> None:
    source = finished(api, tasks)
    refused = api.call("POST", f"/projects/{source}/forks", json=body)
    assert refused.status_code == status, refused.get_data(as_text=True)
    assert words in refused.get_data(as_text=True)
    assert api.ok("GET", f"/projects/{source}/forks")["items"] == []


def test_a_running_project_or_another_owners_cannot_be_forked(api: Api, tasks: Tasks) -> None:
    running = generate(api)["id"]
    assert api.call("POST", f"/projects/{running}/forks", json={}).status_code == 409
    tasks.deliver_all()
    assert (
        api.call("POST", f"/projects/{running}/forks", json={}, user="mallory").status_code == 404
    )
    unknown_asset = api.call("POST", f"/projects/{running}/forks/preview",
                             json={"asset_changes": {"removed_asset_ids": ["x"]}})  # fmt: skip
    assert unknown_asset.status_code == 422


def test_an_asset_the_snapshot_lacks_is_named(api: Api, tasks: Tasks) -> None:
    mid, _ = cast(api)
    source = finished(api, tasks, manifest_id=mid)
    refused = api.call("POST", f"/projects/{source}/forks/preview",
                       json={"asset_changes": {"modified_assets": {"ghost": {"name": "G"}}}})  # fmt: skip
    assert refused.status_code == 422 and "ghost" in refused.get_json()["error"]["message"]


def test_a_fork_with_a_new_photo_waits_for_it_matches_its_face_and_then_runs(
    api: Api, tasks: Tasks, calls: Calls, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    mid = api.manifest("People")["id"]
    hero = upload_photo(api, mid, "Tom_Hanks_54745.png")
    process(api, mid, offline_models)
    hero = next(a for a in api.ok("GET", f"/manifests/{mid}")["assets"] if a["id"] == hero["id"])
    source = finished(api, tasks, manifest_id=mid)
    calls.reset()

    photo = (PHOTOS / "Tom_Hanks_54745.png").read_bytes()
    forked = fork(api, source, asset_changes={"new_uploads": [{
        "asset_type": "CHARACTER", "name": "Tom again", "content_type": "image/png",
        "size_bytes": len(photo)}]})  # fmt: skip
    assert forked["status"] == "awaiting_uploads" and forked["preview"]["awaiting_uploads"] == 1
    assert forked["preview"]["assets"]["new"] == 1 and forked["preview"]["plan"]["make"] == 0
    (slot,) = forked["uploads"]
    assert slot["url"] and slot["method"] == "PUT" and slot["manifest_tag"] == "CHAR_02"
    assert tasks.deliver_all(limit=1) == [StageOutcome.WAITING], "nothing uploaded yet"

    fork_mid = forked["manifest_id"]
    api.ok("POST", f"/manifests/{fork_mid}/assets/{slot['asset_id']}/upload",
           data={"file": (io.BytesIO(photo), "again.png", "image/png")})  # fmt: skip
    assert tasks.deliver_all(limit=1) == [StageOutcome.WAITING], "its job is started"
    job = project(api, forked["id"])["project"]
    queue, _, payload = dispatcher.tasks[-1]
    assert queue == "manifesting" and payload.job_id == job["fork_job_id"]
    assert make_engine(offline_models).run(payload.job_id) is RunOutcome.DONE
    tasks.deliver_all()

    done = project(api, forked["id"])["project"]
    assert done["status"] == "complete", done
    assert calls.counts() == NOTHING, "a new upload no scene places remakes nothing"
    assets = {a["id"]: a for a in api.ok("GET", f"/manifests/{fork_mid}")["assets"]}
    assert assets[slot["asset_id"]]["face_group_id"] == hero["face_group_id"] is not None
    assert job["awaiting"] == [slot["asset_id"]]


def test_a_fork_whose_images_never_come_fails_naming_them(api: Api, tasks: Tasks) -> None:
    mid, assets = cast(api)
    source = finished(api, tasks, manifest_id=mid)
    forked = fork(api, source, asset_changes={
        "modified_assets": {assets["Ada"]["id"]: {"replace_image": True}},
        "new_uploads": [{"asset_type": "PROP", "name": "Lantern"}]})  # fmt: skip
    assert {s["manifest_tag"] for s in forked["uploads"]} == {"CHAR_01", "PROP_01"}
    assert all(s["url"] is None and s["upload_url_endpoint"] for s in forked["uploads"])
    placing = {s["index"] for s in project(api, source)["scenes"] if "CHAR_01" in s["asset_tags"]}
    made = {s["scene"] for s in forked["preview"]["plan"]["steps"]
            if s["action"] == "make" and s["stage"] == "keyframes"}  # fmt: skip
    assert made == placing, "scenes showing the image to come are made again"
    firestore_client().collection("projects").document(forked["id"]).update(
        {"awaiting_until": utcnow() - timedelta(seconds=1)}
    )
    assert tasks.deliver_all(limit=1) == [StageOutcome.FAILED]
    failed = project(api, forked["id"])["project"]
    assert failed["status"] == "failed"
    assert (
        "CHAR_01 (Ada)" in failed["error"]["cause"]
        and "PROP_01 (Lantern)" in failed["error"]["cause"]
    )
    resumed = api.ok("POST", f"/projects/{forked['id']}/resume")
    assert resumed["status"] == "awaiting_uploads", "a resumed fork waits for its images again"
    assert tasks.deliver_all(limit=1) == [StageOutcome.WAITING]


def test_an_inherited_asset_edited_in_the_forks_manifest_says_what_changed(
    api: Api, tasks: Tasks
) -> None:
    mid, assets = cast(api)
    source = finished(api, tasks, manifest_id=mid)
    forked = fork(api, source)
    ada = assets["Ada"]["id"]
    path = f"/manifests/{forked['manifest_id']}/assets/{ada}"
    assert api.ok("GET", path)["is_inherited"] is True
    edited = api.ok("PATCH", path, json={"name": "Ada Lovelace"})
    assert (edited["is_inherited"], edited["modified_fields"]) == (False, ["name"])
    assert api.ok("GET", f"/manifests/{mid}/assets/{ada}")["name"] == "Ada"


def test_a_new_style_writes_a_new_storyboard_and_reuses_what_still_matches(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    source = finished(api, tasks)
    calls.reset()
    forked = fork(api, source, overrides={"style": "hand-drawn, muted film colours"})
    assert forked["preview"]["storyboard"] == "make" and forked["status"] == "storyboarding"
    tasks.deliver_all()
    done = project(api, forked["id"])
    assert done["project"]["status"] == "complete"
    assert calls.counts()["text"] == 1
    reused = sum(
        r in s["reused_from"] for s in done["scenes"] for r in ("start_frame", "end_frame")
    )
    assert calls.counts()["image"] + reused == 8, "each keyframe made or reused, none twice"


def test_a_regeneration_in_a_fork_asks_for_a_new_result_past_its_sources_rerolls(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    source = finished(api, tasks)
    keyframes = next(c["id"] for c in api.ok("GET", f"/projects/{source}/checkpoints")["items"]
                     if c["stage"] == "keyframes")  # fmt: skip
    api.ok("POST", f"/projects/{source}/checkpoints/{keyframes}/scenes/0/keyframe/regenerate", 202)
    tasks.deliver_all()
    api.ok("POST", f"/projects/{source}/checkpoints/{keyframes}/continue", 202,
           json={"auto_continue": True})  # fmt: skip
    tasks.deliver_all()
    regenerated = project(api, source)["scenes"][0]
    forked = fork(api, source)
    tasks.deliver_all()
    fork_keyframes = next(c["id"] for c in api.ok("GET", f"/projects/{forked['id']}/checkpoints")["items"]
                          if c["stage"] == "keyframes")  # fmt: skip
    calls.reset()

    again = api.ok(
        "POST",
        f"/projects/{forked['id']}/checkpoints/{fork_keyframes}/scenes/0/keyframe/regenerate",
        202,
    )
    assert again["version"] > 2, "past the source's re-roll"
    tasks.deliver_all()
    assert calls.counts()["image"] == 1, "made, not taken from the index"
    detail = api.ok("GET", f"/projects/{forked['id']}/checkpoints/{fork_keyframes}")
    assert detail["scenes"][0]["start_frame_url"] != regenerated["start_frame_url"]
    assert detail["scenes"][0]["bases"]["start_frame"] != regenerated["bases"]["start_frame"]


def test_two_scenes_made_the_same_are_made_once_and_the_preview_says_so(
    api: Api, tasks: Tasks, calls: Calls
) -> None:
    source = finished(api, tasks)
    calls.reset()
    same = {"keyframe_prompt": "gulls over a grey sea", "end_keyframe_prompt": "the gulls land",
            "motion_prompt": "the camera drifts right"}  # fmt: skip
    forked = fork(api, source, scene_edits={"1": same, "3": same})
    assert by_stage(forked["preview"]["plan"]) == {
        "keyframes": (6, 2), "clips": (3, 1), "stitch": (0, 1)
    }  # fmt: skip
    tasks.deliver_all()
    assert calls.counts() == {"text": 0, "image": 2, "video": 1, "stitch": 1}
    scenes = project(api, forked["id"])["scenes"]
    assert scenes[1]["clip_url"] and scenes[1]["bases"] == scenes[3]["bases"]
