"""Uploads (M3): signed URLs, direct uploads and the storage trigger with real CloudEvents."""

from __future__ import annotations

import io
import struct
import zlib

import requests

from shared.clients import firestore_client, storage_client
from shared.models.assets import Asset
from tests.integration.conftest import Api, Events, image_bytes


def setup_asset(api: Api) -> tuple[str, str, str]:
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    return manifest["id"], asset["id"], f"/manifests/{manifest['id']}/assets/{asset['id']}"


def put_through_signed_url(api: Api, path: str, data: bytes, content_type: str) -> dict:  # type: ignore[type-arg]
    ticket = api.ok(
        "POST",
        f"{path}/upload-url",
        201,
        json={"content_type": content_type, "size_bytes": len(data)},
    )
    assert ticket["method"] == "PUT"
    assert "X-Goog-Signature=" in ticket["url"]
    response = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=10)
    assert response.status_code == 200, response.text
    return ticket  # type: ignore[no-any-return]


def object_generation(bucket: str, name: str) -> tuple[str, int] | None:
    blob = storage_client().bucket(bucket).get_blob(name)
    return None if blob is None else (str(blob.generation), int(blob.size))


def test_a_signed_upload_is_attached_by_the_storage_trigger(
    api: Api, events: Events, settings
) -> None:  # type: ignore[no-untyped-def]
    manifest_id, _, path = setup_asset(api)
    data = image_bytes("PNG", (500, 300))
    ticket = put_through_signed_url(api, path, data, "image/png")
    assert api.ok("GET", path)["upload"]["state"] == "pending"
    version_before = api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["version"]

    generation, size = object_generation(settings.storage.upload_bucket, ticket["object_name"])  # type: ignore[misc]
    assert (
        events.finalized(
            settings.storage.upload_bucket, ticket["object_name"], generation, size
        ).status_code
        == 200
    )

    asset = api.ok("GET", path)
    assert asset["upload"] == {
        "state": "ready",
        "error": None,
        "updated_at": asset["upload"]["updated_at"],
    }
    assert asset["image"]["width"] == 500
    assert asset["image"]["content_type"] == "image/png"
    assert api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["version"] == version_before + 1

    thumb = api.call("GET", f"{path}/thumbnail")
    assert thumb.status_code == 302
    fetched = requests.get(thumb.headers["Location"], timeout=10)
    from PIL import Image

    assert max(Image.open(io.BytesIO(fetched.content)).size) == settings.storage.thumbnail_px


def test_a_repeated_event_changes_nothing(api: Api, events: Events, settings) -> None:  # type: ignore[no-untyped-def]
    manifest_id, _, path = setup_asset(api)
    ticket = put_through_signed_url(api, path, image_bytes(), "image/jpeg")
    generation, size = object_generation(settings.storage.upload_bucket, ticket["object_name"])  # type: ignore[misc]
    for _ in range(2):
        events.finalized(settings.storage.upload_bucket, ticket["object_name"], generation, size)
    once = api.ok("GET", f"/manifests/{manifest_id}")
    events.finalized(settings.storage.upload_bucket, ticket["object_name"], generation, size)
    assert api.ok("GET", f"/manifests/{manifest_id}") == once


def test_a_bad_file_leaves_a_readable_error_and_no_object(
    api: Api, events: Events, settings
) -> None:  # type: ignore[no-untyped-def]
    _, _, path = setup_asset(api)
    ticket = put_through_signed_url(api, path, b"GIF89a but not really", "image/png")
    generation, size = object_generation(settings.storage.upload_bucket, ticket["object_name"])  # type: ignore[misc]
    assert (
        events.finalized(
            settings.storage.upload_bucket, ticket["object_name"], generation, size
        ).status_code
        == 200
    )
    asset = api.ok("GET", path)
    assert asset["upload"]["state"] == "failed"
    assert "not a readable image" in asset["upload"]["error"]
    assert asset["image"] is None
    assert object_generation(settings.storage.upload_bucket, ticket["object_name"]) is None
    # The redelivered event finds nothing left to do and still acknowledges.
    assert (
        events.finalized(
            settings.storage.upload_bucket, ticket["object_name"], generation, size
        ).status_code
        == 200
    )
    assert api.ok("GET", path)["upload"]["state"] == "failed"


def test_a_decompression_bomb_is_rejected(api: Api, settings) -> None:  # type: ignore[no-untyped-def]
    _, _, path = setup_asset(api)
    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 99))
        + chunk(b"IEND", b"")
    )
    response = api.call(
        "POST", f"{path}/upload", data={"file": (io.BytesIO(bomb), "bomb.png", "image/png")}
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["status"]) == ("upload_rejected", 422)
    assert "too many pixels" in error["message"]
    assert error["details"][0]["outcome"] == "rejected"
    assert api.ok("GET", path)["upload"]["state"] == "failed"


def test_a_direct_upload_attaches_in_the_request_and_its_event_is_a_no_op(
    api: Api, events: Events, settings
) -> None:  # type: ignore[no-untyped-def]
    manifest_id, _, path = setup_asset(api)
    response = api.call(
        "POST",
        f"{path}/upload",
        data={"file": (io.BytesIO(image_bytes("WEBP")), "x.webp", "image/webp")},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert result["outcome"] == "attached"
    assert result["asset"]["image"]["content_type"] == "image/webp"
    before = api.ok("GET", f"/manifests/{manifest_id}")
    uploads = list(storage_client().list_blobs(settings.storage.upload_bucket))
    assert len(uploads) == 1
    events.finalized(
        settings.storage.upload_bucket, uploads[0].name, str(uploads[0].generation), uploads[0].size
    )
    assert api.ok("GET", f"/manifests/{manifest_id}") == before


def test_an_upload_over_the_size_limit_is_refused_up_front(api: Api, settings) -> None:  # type: ignore[no-untyped-def]
    _, _, path = setup_asset(api)
    too_big = settings.storage.max_upload_bytes + 1
    response = api.call(
        "POST", f"{path}/upload-url", json={"content_type": "image/png", "size_bytes": too_big}
    )
    assert response.status_code == 413


def test_an_upload_url_for_a_gif_is_refused(api: Api) -> None:
    _, _, path = setup_asset(api)
    response = api.call(
        "POST", f"{path}/upload-url", json={"content_type": "image/gif", "size_bytes": 10}
    )
    assert response.status_code == 422


def test_an_event_for_an_unrelated_object_is_acknowledged_and_ignored(
    events: Events, settings
) -> None:  # type: ignore[no-untyped-def]
    assert (
        events.finalized(settings.storage.upload_bucket, "stray/file.txt", "1", 3).status_code
        == 200
    )


def test_an_event_without_object_fields_is_acknowledged_not_retried(events: Events) -> None:
    response = events.client.post(
        "/",
        json={"unexpected": True},
        headers={
            "ce-id": "1", "ce-specversion": "1.0", "ce-source": "//storage.googleapis.com/x",
            "ce-type": "google.cloud.storage.object.v1.finalized",
        },
    )  # fmt: skip
    assert response.status_code == 200


def test_a_newer_upload_supersedes_an_older_pending_one(api: Api, events: Events, settings) -> None:  # type: ignore[no-untyped-def]
    _, _, path = setup_asset(api)
    old = put_through_signed_url(api, path, image_bytes(colour=(0, 0, 255)), "image/jpeg")
    new = put_through_signed_url(api, path, image_bytes(colour=(0, 255, 0)), "image/jpeg")
    for ticket in (new, old):  # events may arrive in any order
        generation, size = object_generation(settings.storage.upload_bucket, ticket["object_name"])  # type: ignore[misc]
        events.finalized(settings.storage.upload_bucket, ticket["object_name"], generation, size)
    asset = api.ok("GET", path)
    assert asset["upload"]["state"] == "ready"
    stored = storage_client().bucket(settings.storage.upload_bucket).get_blob(new["object_name"])
    import hashlib

    assert asset["image"]["sha256"] == hashlib.sha256(stored.download_as_bytes()).hexdigest()
    assert object_generation(settings.storage.upload_bucket, old["object_name"]) is None


def test_concurrent_copies_of_one_event_attach_the_upload_once(
    api: Api, events: Events, settings
) -> None:  # type: ignore[no-untyped-def]
    """Eventarc delivers at least once, and copies can arrive together: four deliveries of one
    (object, generation) at the same moment still make one change."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    manifest_id, asset_id, path = setup_asset(api)
    ticket = put_through_signed_url(api, path, image_bytes("PNG", (400, 300)), "image/png")
    generation, size = object_generation(settings.storage.upload_bucket, ticket["object_name"])  # type: ignore[misc]
    version_before = api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["version"]

    copies = 4
    start = threading.Barrier(copies)

    def deliver(_: int) -> int:
        own = Events(events.client.application.test_client())
        start.wait(timeout=30)
        response = own.finalized(
            settings.storage.upload_bucket, ticket["object_name"], generation, size
        )
        return int(response.status_code)

    with ThreadPoolExecutor(copies) as pool:
        statuses = list(pool.map(deliver, range(copies)))
    assert statuses == [200] * copies

    assert api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["version"] == version_before + 1
    assert api.ok("GET", path)["upload"]["state"] == "ready"
    manifest_doc = firestore_client().collection("manifests").document(manifest_id)
    stored = [Asset.model_validate(s.to_dict()) for s in manifest_doc.collection("assets").stream()]
    assert [a.id for a in stored] == [asset_id]
    image = stored[0].image
    assert image is not None
    assert (image.source_object, image.source_generation) == (ticket["object_name"], generation)
    thumbnails = [
        blob.name
        for blob in storage_client().list_blobs(settings.storage.media_bucket)
        if blob.name.endswith("/thumbnail.webp")
    ]
    assert thumbnails == [image.thumbnail_object_name]
    # One write attached it: the other copies found it attached and wrote nothing.
    summaries = [
        (r.to_dict() or {}).get("summary") for r in manifest_doc.collection("revisions").stream()
    ]
    assert summaries.count(f"upload of {asset_id}") == 1
