"""Manifests through the api function (M1), against the Firestore emulator."""

from __future__ import annotations

import pytest

from shared.clients import firestore_client
from tests.integration.conftest import Api


def test_a_new_manifest_is_a_draft_with_no_assets(api: Api) -> None:
    created = api.manifest("Heroes", category="CHARACTERS", tags=["noir"])
    assert created["status"] == "DRAFT"
    assert created["asset_count"] == 0
    assert created["version"] == 1
    fetched = api.ok("GET", f"/manifests/{created['id']}")
    assert fetched["manifest"] == created
    assert fetched["assets"] == []


def test_update_changes_only_the_fields_sent_and_bumps_the_version(api: Api) -> None:
    created = api.manifest("Heroes", description="old")
    updated = api.ok("PATCH", f"/manifests/{created['id']}", json={"name": "Villains"})
    assert updated["name"] == "Villains"
    assert updated["description"] == "old"
    assert updated["version"] == created["version"] + 1
    assert updated["updated_at"] > created["updated_at"]


def test_null_for_a_required_field_is_refused(api: Api) -> None:
    created = api.manifest()
    response = api.call("PATCH", f"/manifests/{created['id']}", json={"name": None})
    assert response.status_code == 422
    assert "name" in response.get_json()["error"]["message"]


def list_all(api: Api, query: str, limit: int = 4) -> list[str]:
    names, cursor, pages = [], None, 0
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        page = api.ok("GET", f"/manifests?{query}&limit={limit}{suffix}")
        names += [m["name"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return names
        assert pages < 50, "paging does not end"


def test_paging_by_name_visits_every_manifest_once_in_order(api: Api) -> None:
    names = [f"m{i:02d}" for i in range(11)]
    for name in reversed(names):
        api.manifest(name)
    assert list_all(api, "sort=name") == names
    assert list_all(api, "sort=name&order=desc") == names[::-1]


def test_paging_is_exact_when_many_manifests_tie_on_the_sort_value(api: Api) -> None:
    for i in range(9):
        api.manifest(f"tie{i}")  # all have times_used == 0
    seen = list_all(api, "sort=times_used", limit=2)
    assert sorted(seen) == [f"tie{i}" for i in range(9)]


def test_newest_first_is_the_default_order(api: Api) -> None:
    for name in ["a", "b", "c"]:
        api.manifest(name)
    page = api.ok("GET", "/manifests")
    assert [m["name"] for m in page["items"]] == ["c", "b", "a"]
    assert page["next_cursor"] is None


def test_sorting_by_asset_count_puts_the_fullest_first(api: Api) -> None:
    small, big = api.manifest("small"), api.manifest("big")
    api.asset(small["id"])
    for _ in range(3):
        api.asset(big["id"])
    page = api.ok("GET", "/manifests?sort=asset_count")
    assert [m["name"] for m in page["items"]] == ["big", "small"]


def test_filters_by_category_and_status(api: Api) -> None:
    api.manifest("people", category="CHARACTERS")
    api.manifest("places", category="ENVIRONMENT")
    page = api.ok("GET", "/manifests?category=ENVIRONMENT&status=DRAFT")
    assert [m["name"] for m in page["items"]] == ["places"]
    assert api.ok("GET", "/manifests?status=READY")["items"] == []


def test_a_cursor_cannot_be_reused_with_other_filters(api: Api) -> None:
    for i in range(3):
        api.manifest(f"m{i}")
    cursor = api.ok("GET", "/manifests?limit=1")["next_cursor"]
    response = api.call("GET", f"/manifests?limit=1&sort=name&cursor={cursor}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_other_users_see_nothing_of_my_manifests(api: Api) -> None:
    mine = api.manifest("private")
    assert api.ok("GET", "/manifests", user="mallory")["items"] == []
    for method, path, body in [
        ("GET", f"/manifests/{mine['id']}", None),
        ("PATCH", f"/manifests/{mine['id']}", {"name": "stolen"}),
        ("DELETE", f"/manifests/{mine['id']}", None),
        ("POST", f"/manifests/{mine['id']}/duplicate", None),
        ("POST", f"/manifests/{mine['id']}/assets", {"asset_type": "OBJECT", "name": "x"}),
    ]:
        response = api.call(method, path, user="mallory", json=body)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"]["code"] == "not_found"
    assert api.ok("GET", f"/manifests/{mine['id']}")["manifest"]["name"] == "private"


def test_a_deleted_manifest_disappears_from_get_and_list(api: Api) -> None:
    doomed, kept = api.manifest("doomed"), api.manifest("kept")
    assert api.call("DELETE", f"/manifests/{doomed['id']}").status_code == 204
    assert api.call("GET", f"/manifests/{doomed['id']}").status_code == 404
    assert [m["id"] for m in api.ok("GET", "/manifests")["items"]] == [kept["id"]]
    stored = firestore_client().collection("manifests").document(doomed["id"]).get().to_dict()
    assert stored["is_deleted"] is True  # soft: the document stays for projects that used it
    assert stored["deleted_at"] is not None


@pytest.mark.parametrize(("status", "refused"), [("keyframing", True), ("complete", False)])
def test_delete_is_refused_only_while_a_live_project_uses_the_manifest(
    api: Api, status: str, refused: bool
) -> None:
    manifest = api.manifest("in use")
    firestore_client().collection("projects").document("p1").set(
        {"manifest_id": manifest["id"], "status": status, "owner_id": "dev-user"}
    )
    response = api.call("DELETE", f"/manifests/{manifest['id']}")
    if refused:
        assert response.status_code == 409
        assert "still running" in response.get_json()["error"]["message"]
        assert api.call("GET", f"/manifests/{manifest['id']}").status_code == 200
    else:
        assert response.status_code == 204


def test_duplicate_copies_every_asset_field_and_links_the_parent(api: Api) -> None:
    original = api.manifest("Original", category="CHARACTERS", tags=["a"])
    person = api.asset(original["id"], "CHARACTER", "Ada")
    api.asset(original["id"], "OBJECT", "Lamp")
    # Fields that processing fills in (embeddings, prompts, crops) must come along too.
    assets = (
        firestore_client().collection("manifests").document(original["id"]).collection("assets")
    )
    assets.document(person["id"]).update(
        {
            "reverse_prompt": "a woman in a red coat",
            "quality_score": 8.5,
            "face_embedding": {"model": "sface-2021dec", "vector": [0.1, 0.2, 0.3]},
            "face_group_id": "g1",
        }
    )
    crop_id = "crop-of-ada"
    assets.document(crop_id).set(
        {
            "id": crop_id, "manifest_id": original["id"], "asset_type": "CHARACTER",
            "manifest_tag": "CHAR_09", "name": "Ada face", "source": "extracted",
            "source_asset_id": person["id"], "is_face_crop": True,
        }
    )  # fmt: skip

    copy = api.ok("POST", f"/manifests/{original['id']}/duplicate", 201, json={"name": "Copy"})
    manifest = copy["manifest"]
    assert manifest["name"] == "Copy"
    assert manifest["status"] == "DRAFT"
    assert manifest["parent_manifest_id"] == original["id"]
    assert manifest["asset_count"] == 3
    by_tag = {a["manifest_tag"]: a for a in copy["assets"]}
    assert set(by_tag) == {"CHAR_01", "OBJ_01", "CHAR_09"}
    assert by_tag["CHAR_01"]["reverse_prompt"] == "a woman in a red coat"
    assert by_tag["CHAR_01"]["face_embedding_model"] == "sface-2021dec"
    assert by_tag["CHAR_09"]["source_asset_id"] == by_tag["CHAR_01"]["id"]  # remapped to the copy
    assert by_tag["CHAR_01"]["id"] != person["id"]
    stored = (
        firestore_client().collection("manifests").document(manifest["id"]).collection("assets")
        .document(by_tag["CHAR_01"]["id"]).get().to_dict()
    )  # fmt: skip
    assert stored["face_embedding"] == {"model": "sface-2021dec", "vector": [0.1, 0.2, 0.3]}
    # New assets of the copy continue the tag sequence instead of colliding.
    assert api.asset(manifest["id"], "OBJECT")["manifest_tag"] == "OBJ_02"


def test_duplicate_without_a_body_names_the_copy_after_the_original(api: Api) -> None:
    original = api.manifest("Heroes")
    copy = api.ok("POST", f"/manifests/{original['id']}/duplicate", 201)
    assert copy["manifest"]["name"] == "Heroes (copy)"
