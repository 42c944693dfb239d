"""A scripted session against the local stack, over HTTP only, as a client would: build a
manifest from real photos uploaded through signed URLs, page through manifests, duplicate,
delete, and show where the thumbnails are.

Usage: demo_session.py PHOTO_DIR OUT_DIR [API_URL]
Without API_URL it starts its own stack (state in .local/demo), and stops it at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import requests

TIMEOUT = 30


class Client:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()

    def __call__(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, self.base + path, timeout=TIMEOUT, **kwargs)
        if response.status_code != expect:
            raise SystemExit(
                f"{method} {path}: expected {expect}, got {response.status_code}: {response.text}"
            )
        return response.json() if response.content else None


def say(text: str) -> None:
    print(text, flush=True)


def wait_for_upload(api: Client, path: str, seconds: float = 30) -> dict[str, Any]:
    """The storage trigger runs asynchronously: watch the asset until it settles."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        asset: dict[str, Any] = api("GET", path)
        if asset["upload"]["state"] in ("ready", "failed"):
            return asset
        time.sleep(0.2)
    raise SystemExit(f"the upload of {path} was not processed within {seconds}s")


def content_type_of(photo: Path) -> str:
    return {".png": "image/png", ".webp": "image/webp"}.get(photo.suffix.lower(), "image/jpeg")


def upload_signed(api: Client, path: str, photo: Path) -> dict[str, Any]:
    data = photo.read_bytes()
    content_type = content_type_of(photo)
    ticket = api(
        "POST",
        f"{path}/upload-url",
        201,
        json={"content_type": content_type, "size_bytes": len(data)},
    )
    put = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=TIMEOUT)
    put.raise_for_status()
    return wait_for_upload(api, path)


def main(api_url: str, photo_dir: Path, out_dir: Path) -> None:
    api = Client(api_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    say(f"API {api_url}; {len(photos)} sample photos in {photo_dir}")

    manifest = api("POST", "/manifests", 201, json={
        "name": "Demo cast", "category": "CHARACTERS", "description": "Reference photos from packages",
        "tags": ["demo"],
    })  # fmt: skip
    mid = manifest["id"]
    say(f"\n1. created manifest {mid} ({manifest['status']}, version {manifest['version']})")

    say("\n2. assets, each uploaded through a signed URL and attached by the storage trigger")
    # What each sample photo is to a production: people are characters, a street a place.
    kinds = {"bus": "ENVIRONMENT"}
    assets = []
    for photo in photos:
        kind = kinds.get(photo.stem, "CHARACTER")
        asset = api(
            "POST", f"/manifests/{mid}/assets", 201, json={"asset_type": kind, "name": photo.stem}
        )
        path = f"/manifests/{mid}/assets/{asset['id']}"
        started = time.monotonic()
        settled = upload_signed(api, path, photo)
        image = settled["image"]
        say(f"   {settled['manifest_tag']:<9} {photo.name:<24} -> {image['width']}x{image['height']} "
            f"{image['content_type']}, sha256 {image['sha256'][:12]}…, attached in {time.monotonic() - started:.2f}s")  # fmt: skip
        assets.append((settled, path))

    say("\n3. a file that is not an image is refused, with a reason, and removed")
    bad = api(
        "POST", f"/manifests/{mid}/assets", 201, json={"asset_type": "OTHER", "name": "not a photo"}
    )
    bad_path = f"/manifests/{mid}/assets/{bad['id']}"
    fake = out_dir / "not-a-photo.jpg"
    fake.write_text("this is text pretending to be a JPEG")
    rejected = upload_signed(api, bad_path, fake)
    say(
        f"   {rejected['manifest_tag']}: upload {rejected['upload']['state']}: {rejected['upload']['error']}"
    )

    say("\n4. a direct multipart upload (for small clients)")
    direct = api(
        "POST", f"/manifests/{mid}/assets", 201, json={"asset_type": "STYLE", "name": "direct"}
    )
    with photos[0].open("rb") as handle:
        result = api(
            "POST",
            f"/manifests/{mid}/assets/{direct['id']}/upload",
            files={"file": (photos[0].name, handle, content_type_of(photos[0]))},
        )
    say(f"   {result['asset']['manifest_tag']}: {result['outcome']} ({result['detail']})")

    say("\n5. tags are never reused: delete one, add another of the same type")
    api("DELETE", bad_path, 204)
    again = api(
        "POST", f"/manifests/{mid}/assets", 201, json={"asset_type": "OTHER", "name": "newcomer"}
    )
    say(f"   deleted {rejected['manifest_tag']}, the next OTHER is {again['manifest_tag']}")

    detail = api("GET", f"/manifests/{mid}")
    m = detail["manifest"]
    say(
        f"   manifest now: {m['asset_count']} assets {m['asset_type_counts']}, version {m['version']}"
    )

    say("\n6. listing and paging (cursor pagination, sorted by name)")
    for name in ["Alley set", "Brand kit", "Castle", "Desert", "Empty stage"]:
        category = "BRAND_KIT" if name == "Brand kit" else "ENVIRONMENT"
        api("POST", "/manifests", 201, json={"name": name, "category": category})
    cursor, page_no = None, 0
    while True:
        page_no += 1
        params = {"sort": "name", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api("GET", "/manifests", params=params)
        say(f"   page {page_no}: {[x['name'] for x in page['items']]}")
        cursor = page["next_cursor"]
        if not cursor:
            break
    environments = api("GET", "/manifests", params={"category": "ENVIRONMENT"})
    say(f"   category ENVIRONMENT: {len(environments['items'])} manifests")

    say("\n7. duplicate: a new draft with every asset, images shared")
    copy = api("POST", f"/manifests/{mid}/duplicate", 201, json={"name": "Demo cast (take 2)"})
    same = sum(
        1 for a, b in zip(detail["assets"], copy["assets"], strict=True)
        if (a["image"] or {}).get("sha256") == (b["image"] or {}).get("sha256")
    )  # fmt: skip
    say(f"   {copy['manifest']['id']} parent={copy['manifest']['parent_manifest_id']} "
        f"assets={len(copy['assets'])} same images={same}")  # fmt: skip

    say("\n8. ownership: another user cannot see it")
    other = requests.get(
        f"{api.base}/manifests/{mid}",
        headers={"Authorization": "Bearer dev:someone-else"},
        timeout=TIMEOUT,
    )
    say(f"   GET as someone-else -> {other.status_code} {other.json()['error']['code']}")

    say("\n9. soft delete of the copy")
    api("DELETE", f"/manifests/{copy['manifest']['id']}", 204)
    gone = requests.get(f"{api.base}/manifests/{copy['manifest']['id']}", timeout=TIMEOUT)
    say(f"   GET after delete -> {gone.status_code}")

    say("\n10. thumbnails (redirects to signed URLs; copies saved locally)")
    for asset in api("GET", f"/manifests/{mid}")["assets"]:
        if not asset["image"]:
            continue
        redirect = requests.get(
            api.base + asset["image"]["thumbnail_url"], allow_redirects=False, timeout=TIMEOUT
        )
        thumb = requests.get(redirect.headers["Location"], timeout=TIMEOUT)
        target = out_dir / f"{asset['manifest_tag']}.webp"
        target.write_bytes(thumb.content)
        say(f"   {asset['manifest_tag']:<9} {target}  ({len(thumb.content)} bytes)")

    say("\n11. manifesting: a Cloud Task runs the job on the model service (offline models)")
    job = run_job(api, f"/manifests/{mid}/process")
    show_manifest(api, mid, out_dir)

    say("\n12. incremental: a new upload is processed alone and matched to the faces there")
    portrait = next((p for p in photos if p.suffix == ".png"), photos[0])
    extra = api(
        "POST",
        f"/manifests/{mid}/assets",
        201,
        json={"asset_type": "CHARACTER", "name": "another portrait"},
    )
    extra_path = f"/manifests/{mid}/assets/{extra['id']}"
    upload_signed(api, extra_path, portrait)
    job = run_job(api, f"/manifests/{mid}/process")
    settled = api("GET", extra_path)
    mates = [a["manifest_tag"] for a in api("GET", f"/manifests/{mid}")["assets"]
             if a["face_group_id"] and a["face_group_id"] == settled["face_group_id"] and a["id"] != extra["id"]]  # fmt: skip
    say(f"   images detected this run: {job['counters']['images_detected']}; "
        f"{settled['manifest_tag']} joined the face group of {', '.join(mates) or 'nobody'}")  # fmt: skip
    pid, detail = make_video(api, mid, out_dir)
    fork_video(api, mid, pid, detail["scenes"], portrait, out_dir)
    say(f"\nDone: manifest {mid} in Firestore; thumbnails, contact sheet and videos in {out_dir}")


def wait_for_project(
    api: Client, pid: str, until: set[str], seconds: float = 600
) -> dict[str, Any]:
    """Watches the project stage by stage, as a client listening to it would."""
    started, last = time.monotonic(), None
    while True:
        detail: dict[str, Any] = api("GET", f"/projects/{pid}")
        project = detail["project"]
        if (project["status"], project["stage"]) != last:
            last = (project["status"], project["stage"])
            say(f"   [{time.monotonic() - started:5.1f}s] {project['status']:<16} "
                f"stage {project['stage']} on branch {project['branch']}")  # fmt: skip
        if project["status"] in until:
            return detail
        if project["status"] == "failed":
            raise SystemExit(f"generation failed: {project['error']}")
        if time.monotonic() - started > seconds:
            raise SystemExit(f"project {pid} did not reach {until} within {seconds}s")
        time.sleep(0.3)


def make_video(api: Client, mid: str, out_dir: Path) -> tuple[str, dict[str, Any]]:
    say("\n13. generate: a prompt and the manifest; staged after the storyboard for review")
    settings = {"prompt": "two old friends meet at a bus stop and share a memory",
                "manifest_id": mid, "clip_seconds": 2, "total_seconds": 8, "run_through": "storyboard"}  # fmt: skip
    estimate = api("POST", "/generate/estimate", json=settings)
    say(f"   estimate before running: ${estimate['total']:.2f} (local models cost nothing)")
    project = api("POST", "/generate", 202, json=settings)
    pid = project["id"]
    say(f"   project {pid}: {project['scene_count']} scenes, snapshot {project['snapshot_id']} "
        f"of manifest version {project['manifest_version']}")  # fmt: skip
    detail = wait_for_project(api, pid, {"staged"})
    say("   storyboard and scene manifests:")
    for scene in detail["scenes"]:
        remapped = f"  remapped {scene['remapped_tags']}" if scene["remapped_tags"] else ""
        say(f"     [{scene['index']}] {scene['shot_type']:<17} {scene['title'][:40]:<40} "
            f"tags {scene['asset_tags']} refs {len(scene['reference_asset_ids'])}{remapped}")  # fmt: skip
        say(f"         {scene['keyframe_prompt'][:110]}")

    say("\n14. continue the storyboard as it is, to the finished video on branch main")
    storyboard = api("GET", f"/projects/{pid}/checkpoints/current")["checkpoint"]["id"]
    api("POST", f"/projects/{pid}/checkpoints/{storyboard}/continue", 202,
        json={"auto_continue": True})  # fmt: skip
    show_identity(wait_for_project(api, pid, {"complete"}))

    say("\n15. edit scene 0 at the storyboard checkpoint, then continue (a new branch)")
    first = detail["scenes"][0]
    api("PATCH", f"/projects/{pid}/checkpoints/{storyboard}/scenes/0",
        json={"title": "The bus arrives",
              "keyframe_prompt": first["keyframe_prompt"] + " A bus pulls in, rain on its windows.",
              "end_keyframe_prompt": first["end_keyframe_prompt"] + " The bus pulls away."})  # fmt: skip
    plan = api("GET", f"/projects/{pid}/checkpoints/{storyboard}/plan")
    say(f"   plan from {storyboard}: {plan['reuse']} reused, {plan['make']} to make, "
        f"${plan['cost_usd']:.2f} at list prices")  # fmt: skip
    for stage in plan["stages"]:
        say(f"     {stage['stage']:<10} {stage['reuse']} reused, {stage['make']} to make, "
            f"${stage['cost_usd']:.2f}")  # fmt: skip
    continued = api("POST", f"/projects/{pid}/checkpoints/{storyboard}/continue", 202,
                    json={"auto_continue": True})  # fmt: skip
    if continued["plan"] != plan:
        raise SystemExit(f"the continue answered another plan than GET …/plan: {continued['plan']}")
    say(f"   continuing on branch {continued['branch']}")
    detail = wait_for_project(api, pid, {"complete"})
    show_ledger(detail, plan)

    say("\n16. checkpoint tree")
    tree = api("GET", f"/projects/{pid}/checkpoints")
    for branch in tree["branches"]:
        origin = f" from {branch['parent']}" if branch["parent"] else ""
        say(f"   branch {branch['name']}{origin}: {branch['checkpoints']} checkpoint(s)")
    for checkpoint in tree["items"]:
        current = "  <- current" if checkpoint["is_current"] else ""
        say(f"     {checkpoint['id']} {checkpoint['stage']:<10} {checkpoint['branch']:<7} "
            f"parent {checkpoint['parent_id']}{current}")  # fmt: skip
    video = requests.get(f"{api.base}/projects/{pid}/video", timeout=TIMEOUT)
    target = out_dir / "final.mp4"
    target.write_bytes(video.content)
    cost = detail["project"]["cost"]
    say(f"   final video: {target} ({len(video.content)} bytes); spent ${cost['spent_usd']:.2f}")
    return pid, detail


def fork_video(
    api: Client, mid: str, pid: str, scenes: list[dict[str, Any]], photo: Path, out_dir: Path
) -> None:
    say("\n17. fork the finished video (branch main-1), with a new photo: preview, then the fork")
    edited, deleted = scenes[-2], scenes[-1]
    kept = [s for s in scenes if s["index"] not in (edited["index"], deleted["index"])]
    assets = {a["manifest_tag"]: a for a in api("GET", f"/manifests/{mid}")["assets"]}

    def placing(tag: str, among: list[dict[str, Any]]) -> int:
        return sum(tag in s["asset_tags"] for s in among)

    # An asset some scenes place and others not; best one that leaves some kept scenes as they are.
    tags = [t for t in sorted({t for s in scenes for t in s["asset_tags"]})
            if 0 < placing(t, scenes) < len(scenes)]  # fmt: skip
    tag = next((t for t in tags if 0 < placing(t, kept) < len(kept)), tags[0])
    data = photo.read_bytes()
    body = {
        "name": "Demo video (fork)",
        "scene_edits": {str(edited["index"]): {
            "motion_prompt": edited["motion_prompt"] + " The camera drifts slowly left."}},
        "deleted_scenes": [deleted["index"]],
        "asset_changes": {
            "modified_assets": {assets[tag]["id"]: {
                "reverse_prompt": assets[tag]["reverse_prompt"] + ", seen at dusk in the rain"}},
            "new_uploads": [{"asset_type": "CHARACTER", "name": "one more portrait",
                             "content_type": content_type_of(photo), "size_bytes": len(data)}],
        },
    }  # fmt: skip
    say(f"   scene {edited['index']}: new motion prompt; scene {deleted['index']}: deleted; "
        f"{tag} (in scenes {[s['index'] for s in scenes if tag in s['asset_tags']]}): new reverse "
        f"prompt; new upload: {photo.name}")  # fmt: skip
    preview = api("POST", f"/projects/{pid}/forks/preview", json=body)
    plan, counts = preview["plan"], preview["assets"]
    say(f"   preview: {preview['scene_count']} scenes, storyboard {preview['storyboard']}; "
        f"{plan['reuse']} reused, {plan['make']} to make, ${plan['cost_usd']:.2f} at list prices")  # fmt: skip
    for stage in plan["stages"]:
        say(f"     {stage['stage']:<10} {stage['reuse']} reused, {stage['make']} to make, "
            f"${stage['cost_usd']:.2f}")  # fmt: skip
    say(f"   assets: {counts['inherited']} inherited, {counts['modified']} modified, "
        f"{counts['removed']} removed, {counts['new']} new; awaiting {preview['awaiting_uploads']} upload(s)")  # fmt: skip
    forked = api("POST", f"/projects/{pid}/forks", 202, json=body)
    if forked["preview"] != preview:
        raise SystemExit(f"the fork answered another preview: {forked['preview']}")
    (slot,) = forked["uploads"]
    say(f"   fork {forked['id']} ({forked['status']}), manifest {forked['manifest_id']}; "
        f"PUT {photo.name} as {slot['manifest_tag']} to its signed URL")  # fmt: skip
    requests.put(
        slot["url"], data=data, headers=slot["headers"], timeout=TIMEOUT
    ).raise_for_status()
    done = wait_for_project(api, forked["id"], {"complete"})
    job = api("GET", f"/jobs/{done['project']['fork_job_id']}")
    say("   its manifesting job on the model service: "
        + ", ".join(f"{k}={v}" for k, v in job["counters"].items() if v))  # fmt: skip
    show_ledger(done, plan)
    show_identity(done)
    fork_assets = api("GET", f"/manifests/{forked['manifest_id']}")["assets"]
    new = next(a for a in fork_assets if a["id"] == slot["asset_id"])
    person = next(a for a in fork_assets if a["name"] == photo.stem)  # uploaded in step 2
    mates = [a["manifest_tag"] for a in fork_assets
             if a["face_group_id"] == new["face_group_id"] and a["id"] != new["id"]]  # fmt: skip
    if not new["face_group_id"] or new["face_group_id"] != person["face_group_id"]:
        raise SystemExit(f"{new['manifest_tag']} is not in {person['manifest_tag']}'s face group")
    say(f"   {new['manifest_tag']} joined face group {new['face_group_id']}, "
        f"{person['manifest_tag']}'s ({', '.join(mates)})")  # fmt: skip
    video = requests.get(f"{api.base}/projects/{forked['id']}/video", timeout=TIMEOUT)
    target = out_dir / "fork.mp4"
    target.write_bytes(video.content)
    say(f"   fork video: {target} ({len(video.content)} bytes), "
        f"{done['project']['scene_count']} scenes; spent ${done['project']['cost']['spent_usd']:.2f}")  # fmt: skip


def show_identity(detail: dict[str, Any]) -> None:
    """Each scene's identity check: the faces in its keyframes against its characters'."""
    project = detail["project"]
    cost = project["cost"]
    say(f"   identity checks of the keyframes ({cost['identity_checks']} calls to the model "
        f"service, {cost['identity_check_s']:.1f} s; for review: "
        f"{project['identity_review'] or 'none'}):")  # fmt: skip
    for scene in detail["scenes"]:
        identity = scene["identity"] or {"verdict": "not checked", "characters": []}
        score = f"{identity['score']:.2f}" if identity.get("score") is not None else "-"
        who = ", ".join(
            f"{c['tag']} {c['similarity']:.2f}" if c["similarity"] is not None
            else f"{c['tag']} {c['verdict']}"
            for c in identity["characters"]
        )  # fmt: skip
        rerolls = sum(f["rerolls"] for f in identity.get("frames", {}).values())
        say(f"     [{scene['index']}] score {score:<5} {identity['verdict']:<16} {who}"
            + (f"  re-rolled {rerolls}" if rerolls else "")
            + (f"  ({identity['reason']})" if identity.get("reason") else ""))  # fmt: skip


ARTIFACT_STAGE = {"start_frame": "keyframes", "end_frame": "keyframes", "clip": "clips"}


def show_ledger(detail: dict[str, Any], plan: dict[str, Any]) -> None:
    """What the run made and reused, from the scenes' reused_from, held against the plan."""
    planned = {stage["stage"] for stage in plan["stages"]}
    pid = detail["project"]["id"]
    done: dict[tuple[str, int | None, str], tuple[str, Any]] = {}
    say("   made and reused, per scene:")
    for scene in detail["scenes"]:
        ran = [a for a in ARTIFACT_STAGE if a in scene["bases"] and ARTIFACT_STAGE[a] in planned]
        sources = {a: scene["reused_from"].get(a) for a in ran}
        for artifact, source in sources.items():
            key = (ARTIFACT_STAGE[artifact], scene["index"], artifact)
            done[key] = ("reuse" if source else "make", source)
        made = ", ".join(a for a, source in sources.items() if not source) or "nothing"
        origins = sorted({s["checkpoint_id"] for s in sources.values() if s})
        others = sorted({s["project_id"] for s in sources.values() if s} - {pid})
        of = f" of project {', '.join(others)}" if others else ""
        reused = ", ".join(a for a, source in sources.items() if source)
        reused = f"; reused {reused} (checkpoints {', '.join(origins)}{of})" if reused else ""
        say(f"     [{scene['index']}] made {made}{reused}; ${scene['cost_usd']:.2f}")
    if "stitch" in planned:
        source = detail["project"]["final_video_reused_from"]
        done[("stitch", None, "final_video")] = ("reuse" if source else "make", source)
        origin = (
            f"reused from {source['project_id']}/{source['checkpoint_id']}" if source else "made"
        )
        say(f"     final video {origin}")
    expected = {(s["stage"], s["scene"], s["artifact"]): (s["action"], s["source"])
                for s in plan["steps"]}  # fmt: skip
    if done != expected:
        raise SystemExit(f"the run does not agree with its plan: planned {expected}, did {done}")
    reuse = sum(1 for action, _ in done.values() if action == "reuse")
    say(f"   {reuse} reused, {len(done) - reuse} made: the counts agree with the plan")


def run_job(api: Client, path: str) -> dict[str, Any]:
    """Starts a job and watches it step by step, as a client listening to it would."""
    job = api("POST", path, 202)
    started, last_step = time.monotonic(), None
    while job["status"] not in ("succeeded", "failed"):
        if job["step"] != last_step:
            say(f"   [{time.monotonic() - started:5.1f}s] {job['status']:<9} step {job['step']}")
            last_step = job["step"]
        if time.monotonic() - started > 300:
            raise SystemExit(f"job {job['id']} did not finish within 300s")
        time.sleep(0.2)
        job = api("GET", f"/jobs/{job['id']}")
    counters = ", ".join(f"{k}={v}" for k, v in job["counters"].items() if v)
    say(f"   [{time.monotonic() - started:5.1f}s] {job['status']}: {counters}")
    if job["status"] != "succeeded":
        raise SystemExit(f"job failed: {job['error']}")
    for failure in job["failures"]:
        say(f"   failed asset {failure['asset_id']} at {failure['step']}: {failure['reason']}")
    return job


def show_manifest(api: Client, mid: str, out_dir: Path) -> None:
    detail = api("GET", f"/manifests/{mid}")
    manifest, assets = detail["manifest"], detail["assets"]
    say(
        f"   manifest {manifest['status']}, {manifest['asset_count']} assets {manifest['asset_type_counts']}"
    )
    by_tag = {a["id"]: a["manifest_tag"] for a in assets}
    say("   tags and reverse prompts:")
    for a in assets:
        origin = (
            f"from {by_tag.get(a['source_asset_id'], '?')}" if a["source_asset_id"] else "uploaded"
        )
        detected = (
            f" {a['detection_class']} {a['detection_confidence']:.2f}"
            if a["detection_class"]
            else ""
        )
        say(f"     {a['manifest_tag']:<9} {a['asset_type']:<11} {origin:<14}{detected:<16} "
            f"q={a['quality_score'] if a['quality_score'] is not None else '-'}  "
            f"{(a['reverse_prompt'] or a['processing_error'] or '')[:70]}")  # fmt: skip
    groups: dict[str, list[str]] = {}
    for a in assets:
        if a["face_group_id"]:
            mark = "*" if a["is_face_group_primary"] else ""
            groups.setdefault(a["face_group_id"], []).append(a["manifest_tag"] + mark)
    say(f"   face groups (* primary): {len(groups)}")
    for members in sorted(groups.values(), key=len, reverse=True):
        say(f"     {' '.join(members)}")
    sheet = requests.get(f"{api.base}/manifests/{mid}/contact-sheet", timeout=TIMEOUT)
    target = out_dir / "contact-sheet.jpg"
    target.write_bytes(sheet.content)
    say(f"   contact sheet: {manifest['contact_sheet_object']} (media bucket), saved to {target}")


def run_with_own_stack(photo_dir: Path, out_dir: Path) -> None:
    from infra.local.stack import LocalStack

    started = time.monotonic()
    with LocalStack(".local/demo", die_with_parent=True) as stack:
        stack.start()
        say(f"local stack up in {time.monotonic() - started:.1f}s (logs in {stack.logs_dir})")
        for name, process in stack.processes.items():
            say(f"   {name:<12} pid {process.pid}")
        main(stack.api_url, photo_dir, out_dir)
    say("local stack stopped")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        main(sys.argv[3], Path(sys.argv[1]), Path(sys.argv[2]))
    elif len(sys.argv) == 3:
        run_with_own_stack(Path(sys.argv[1]), Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
