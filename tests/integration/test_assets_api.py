"""Assets through the api function (M2): tags, counts, re-tagging, cascades, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared.clients import firestore_client
from tests.integration.conftest import Api


def manifest_of(api: Api, manifest_id: str) -> dict:  # type: ignore[type-arg]
    return api.ok("GET", f"/manifests/{manifest_id}")  # type: ignore[no-any-return]


def test_each_type_gets_its_own_tag_sequence(api: Api) -> None:
    manifest = api.manifest()
    tags = [
        api.asset(manifest["id"], kind)["manifest_tag"]
        for kind in [
            "CHARACTER",
            "CHARACTER",
            "OBJECT",
            "ENVIRONMENT",
            "PROP",
            "STYLE",
            "VEHICLE",
            "OTHER",
        ]
    ]
    assert tags == [
        "CHAR_01",
        "CHAR_02",
        "OBJ_01",
        "ENV_01",
        "PROP_01",
        "STYLE_01",
        "VEH_01",
        "OTHER_01",
    ]
    found = manifest_of(api, manifest["id"])
    assert found["manifest"]["asset_count"] == 8
    assert found["manifest"]["asset_type_counts"]["CHARACTER"] == 2


def test_a_deleted_assets_tag_is_never_issued_again(api: Api) -> None:
    manifest = api.manifest()
    first = api.asset(manifest["id"])
    api.asset(manifest["id"])
    assert (
        api.call("DELETE", f"/manifests/{manifest['id']}/assets/{first['id']}").status_code == 204
    )
    assert api.asset(manifest["id"])["manifest_tag"] == "CHAR_03"
    assert manifest_of(api, manifest["id"])["manifest"]["asset_count"] == 2


def test_concurrent_creation_issues_unique_tags_and_keeps_the_count_exact(api: Api) -> None:
    manifest = api.manifest()

    def create(i: int) -> str:
        kind = "CHARACTER" if i % 2 else "OBJECT"
        return api.asset(manifest["id"], kind, f"a{i}")["manifest_tag"]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=8) as pool:
        tags = list(pool.map(create, range(24)))
    assert len(set(tags)) == 24
    assert sorted(t for t in tags if t.startswith("CHAR")) == [
        f"CHAR_{i:02d}" for i in range(1, 13)
    ]
    found = manifest_of(api, manifest["id"])
    assert found["manifest"]["asset_count"] == len(found["assets"]) == 24
    assert found["manifest"]["version"] == 25


def test_changing_the_type_issues_a_new_tag_of_the_new_type(api: Api) -> None:
    manifest = api.manifest()
    asset = api.asset(manifest["id"], "OBJECT")
    api.asset(manifest["id"], "PROP")
    changed = api.ok(
        "PATCH", f"/manifests/{manifest['id']}/assets/{asset['id']}", json={"asset_type": "PROP"}
    )
    assert changed["manifest_tag"] == "PROP_02"
    counts = manifest_of(api, manifest["id"])["manifest"]["asset_type_counts"]
    assert counts == {"PROP": 2}
    renamed = api.ok(
        "PATCH", f"/manifests/{manifest['id']}/assets/{asset['id']}", json={"name": "Chair"}
    )
    assert renamed["manifest_tag"] == "PROP_02"
    assert renamed["name"] == "Chair"


def test_deleting_an_upload_deletes_the_crops_extracted_from_it(api: Api) -> None:
    manifest = api.manifest()
    source = api.asset(manifest["id"], "CHARACTER", "group photo")
    other = api.asset(manifest["id"], "OBJECT", "unrelated")
    assets = (
        firestore_client().collection("manifests").document(manifest["id"]).collection("assets")
    )
    manifests = firestore_client().collection("manifests").document(manifest["id"])
    for i in range(3):  # crops as the manifesting engine writes them, counted in the manifest
        assets.document(f"crop{i}").set(
            {
                "id": f"crop{i}", "manifest_id": manifest["id"], "asset_type": "CHARACTER",
                "manifest_tag": f"CHAR_1{i}", "name": f"face {i}", "source": "extracted",
                "source_asset_id": source["id"],
            }
        )  # fmt: skip
    manifests.update({"asset_count": 5, "asset_type_counts": {"CHARACTER": 4, "OBJECT": 1}})

    assert (
        api.call("DELETE", f"/manifests/{manifest['id']}/assets/{source['id']}").status_code == 204
    )
    found = manifest_of(api, manifest["id"])
    assert [a["id"] for a in found["assets"]] == [other["id"]]
    assert found["manifest"]["asset_count"] == 1
    assert found["manifest"]["asset_type_counts"] == {"OBJECT": 1}


def test_deleting_an_asset_twice_answers_not_found_the_second_time(api: Api) -> None:
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    path = f"/manifests/{manifest['id']}/assets/{asset['id']}"
    assert api.call("DELETE", path).status_code == 204
    assert api.call("DELETE", path).status_code == 404
    assert manifest_of(api, manifest["id"])["manifest"]["asset_count"] == 0


def test_assets_list_in_sort_order(api: Api) -> None:
    manifest = api.manifest()
    api.ok("POST", f"/manifests/{manifest['id']}/assets", 201,
           json={"asset_type": "OBJECT", "name": "last", "sort_order": 9})  # fmt: skip
    api.ok("POST", f"/manifests/{manifest['id']}/assets", 201,
           json={"asset_type": "OBJECT", "name": "first", "sort_order": 1})  # fmt: skip
    items = api.ok("GET", f"/manifests/{manifest['id']}/assets")["items"]
    assert [a["name"] for a in items] == ["first", "last"]


def test_writing_an_assets_reverse_prompt_marks_it_as_the_users_and_bumps_the_version_once(
    api: Api,
) -> None:
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    path = f"/manifests/{manifest['id']}/assets/{asset['id']}"
    version = manifest_of(api, manifest["id"])["manifest"]["version"]

    edited = api.ok("PATCH", path, json={"reverse_prompt": "a tall man in a grey suit"})

    assert edited["reverse_prompt"] == "a tall man in a grey suit"
    assert edited["user_edited"] == ["reverse_prompt"]
    assert manifest_of(api, manifest["id"])["manifest"]["version"] == version + 1
    # The same text again, or nothing at all, is no change: no new version, marks as they were.
    for body in ({"reverse_prompt": "a tall man in a grey suit"}, {}):
        assert api.ok("PATCH", path, json=body)["user_edited"] == ["reverse_prompt"]
    assert manifest_of(api, manifest["id"])["manifest"]["version"] == version + 1
    both = api.ok("PATCH", path, json={"visual_description": "Grey suit, black shoes."})
    assert both["user_edited"] == ["reverse_prompt", "visual_description"]
    assert manifest_of(api, manifest["id"])["manifest"]["version"] == version + 2


def test_a_null_or_overlong_reverse_prompt_is_refused(api: Api) -> None:
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    path = f"/manifests/{manifest['id']}/assets/{asset['id']}"
    version = manifest_of(api, manifest["id"])["manifest"]["version"]

    for body in ({"reverse_prompt": None}, {"visual_description": "x" * 5001}):
        response = api.call("PATCH", path, json=body)
        assert response.status_code == 422, body
        assert response.get_json()["error"]["details"][0]["loc"][:2] == ["body", *body]

    assert api.ok("GET", path)["user_edited"] == []
    assert manifest_of(api, manifest["id"])["manifest"]["version"] == version


def test_a_duplicate_keeps_which_text_the_user_wrote(api: Api) -> None:
    manifest = api.manifest()
    asset = api.asset(manifest["id"])
    api.ok(
        "PATCH",
        f"/manifests/{manifest['id']}/assets/{asset['id']}",
        json={"visual_description": "Grey suit, black shoes."},
    )

    copy = api.ok("POST", f"/manifests/{manifest['id']}/duplicate", 201)

    [copied] = copy["assets"]
    assert copied["visual_description"] == "Grey suit, black shoes."
    assert copied["user_edited"] == ["visual_description"]
