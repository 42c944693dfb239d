"""Face links and review through the API, on real photos with the offline models: a person's
"same" and "different" steer the groups at once (no model call), contradictions are refused
naming the chain, links survive copies and later runs, and later runs match only new faces."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.manifesting.engine import Models
from tests.integration.conftest import Api
from tests.integration.test_manifesting import (
    RecordingDispatcher,
    detail,
    process,
    upload,
)
from tests.integration.test_manifesting import dispatcher as dispatcher
from tests.integration.test_manifesting import offline_models as offline_models
from tests.integration.test_manifesting import pytestmark as pytestmark


def assets_by_id(api: Api, manifest_id: str) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in detail(api, manifest_id)["assets"]}


def groups_of(api: Api, manifest_id: str) -> dict[str, str | None]:
    return {i: a["face_group_id"] for i, a in assets_by_id(api, manifest_id).items()}


def partition(groups: dict[str, str | None], ids: list[str]) -> set[frozenset[str]]:
    """Which of `ids` are grouped together, whatever the groups are called."""
    together: dict[str | None, set[str]] = {}
    for asset_id in ids:
        together.setdefault(groups[asset_id], set()).add(asset_id)
    return {frozenset(members) for members in together.values()}


def link(api: Api, manifest_id: str, a: str, b: str, kind: str) -> Any:
    return api.call(
        "POST",
        f"/manifests/{manifest_id}/face-links",
        json={"asset_a": a, "asset_b": b, "kind": kind},
    )


@pytest.fixture
def two_of_tom(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> Callable[[], tuple[str, str, str, str]]:
    """A processed manifest with two photos of one man and one of two other men: (manifest,
    first photo, second photo, a face crop of the other photo)."""

    def make() -> tuple[str, str, str, str]:
        manifest_id = api.manifest("Cast")["id"]
        first = upload(api, manifest_id, "Tom_Hanks_54745.png")["id"]
        second = upload(api, manifest_id, "Tom_Hanks_54745.png")["id"]
        other = upload(api, manifest_id, "zidane.jpg")["id"]
        process(api, manifest_id, offline_models)
        crops = [
            a for a in assets_by_id(api, manifest_id).values()
            if a["source_asset_id"] == other and a["face_group_id"]
        ]  # fmt: skip
        assert crops
        return manifest_id, first, second, crops[0]["id"]

    return make


def test_links_split_and_join_groups_at_once_and_a_contradiction_names_its_chain(
    api: Api, two_of_tom: Callable[[], tuple[str, str, str, str]], offline_models: Models
) -> None:
    manifest_id, a, b, stranger = two_of_tom()
    before = groups_of(api, manifest_id)
    version = detail(api, manifest_id)["manifest"]["version"]
    assert before[a] == before[b] != before[stranger]

    apart = link(api, manifest_id, a, b, "different")
    assert apart.status_code == 201, apart.get_data(as_text=True)
    answer = apart.get_json()
    assert answer["link"]["kind"] == "different"
    assert answer["face_groups"][a] != answer["face_groups"][b]
    after = groups_of(api, manifest_id)
    assert after[a] != after[b] and before[a] in (after[a], after[b])  # one part keeps the id
    assert detail(api, manifest_id)["manifest"]["version"] > version
    primaries = [x for x in assets_by_id(api, manifest_id).values() if x["is_face_group_primary"]]
    assert len(primaries) == len({g for g in after.values() if g})

    again = link(api, manifest_id, b, a, "different")
    assert again.status_code == 200
    assert again.get_json()["link"]["id"] == answer["link"]["id"]

    joined = link(api, manifest_id, stranger, b, "same")
    assert joined.status_code == 201
    contradiction = link(api, manifest_id, a, stranger, "same")
    assert contradiction.status_code == 409
    error = contradiction.get_json()["error"]
    assert error["details"][0]["chain"] == [a, stranger, b]
    assert sorted(error["details"][0]["different"]) == sorted([a, b])
    listed = api.ok("GET", f"/manifests/{manifest_id}/face-links")["items"]
    assert {(x["asset_a"], x["asset_b"], x["kind"]) for x in listed} == {
        (a, b, "different"),
        (stranger, b, "same"),
    }
    assert groups_of(api, manifest_id)[stranger] == groups_of(api, manifest_id)[b]

    # A copy keeps the links, on its own assets (same tags).
    copy = api.ok("POST", f"/manifests/{manifest_id}/duplicate", 201)
    tag = {x["id"]: x["manifest_tag"] for x in assets_by_id(api, manifest_id).values()}
    copied = {x["manifest_tag"]: x["id"] for x in copy["assets"]}
    copy_links = api.ok("GET", f"/manifests/{copy['manifest']['id']}/face-links")["items"]
    assert {(x["asset_a"], x["asset_b"]) for x in copy_links} == {
        (copied[tag[a]], copied[tag[b]]),
        (copied[tag[stranger]], copied[tag[b]]),
    }

    # Deleting a link undoes it; deleting an asset deletes its links.
    same_id = next(x["id"] for x in listed if x["kind"] == "same")
    api.ok("DELETE", f"/manifests/{manifest_id}/face-links/{same_id}", 204)
    assert groups_of(api, manifest_id)[stranger] == before[stranger]
    assert api.call("DELETE", f"/manifests/{manifest_id}/face-links/{same_id}").status_code == 404
    api.ok("DELETE", f"/manifests/{manifest_id}/assets/{b}", 204)
    assert api.ok("GET", f"/manifests/{manifest_id}/face-links")["items"] == []


def test_a_later_run_matches_only_new_faces_honouring_links_like_a_full_regroup(
    api: Api, two_of_tom: Callable[[], tuple[str, str, str, str]], offline_models: Models
) -> None:
    manifest_id, a, b, stranger = two_of_tom()
    assert link(api, manifest_id, a, b, "different").status_code == 201
    assert link(api, manifest_id, a, stranger, "same").status_code == 201
    third = upload(api, manifest_id, "Tom_Hanks_54745.png")["id"]

    job = process(api, manifest_id, offline_models)

    assert job["face_grouping_mode"] == "incremental"
    total = sum(1 for x in assets_by_id(api, manifest_id).values() if x["face_group_id"])
    assert job["counters"]["faces_regrouped"] < total
    incremental = groups_of(api, manifest_id)
    assert incremental[a] == incremental[stranger] != incremental[b]
    assert incremental[third] in (incremental[a], incremental[b])
    uploads = [a, b, third]
    full = process(api, manifest_id, offline_models, full=True)
    assert full["face_grouping_mode"] == "full"
    assert partition(groups_of(api, manifest_id), uploads) == partition(incremental, uploads)


def test_links_posted_at_once_are_all_honoured_and_opposite_ones_refused(
    api: Api, two_of_tom: Callable[[], tuple[str, str, str, str]]
) -> None:
    manifest_id, a, b, stranger = two_of_tom()
    requests = [(a, b, "different"), (a, stranger, "same")] * 2 + [(b, a, "same")] * 2
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: link(api, manifest_id, *r), requests))

    # Whichever of a–b's two kinds is stored first, the other is refused; a–stranger is
    # stored; each repeat finds its link.
    assert sorted(r.status_code for r in answers) == [200, 200, 201, 201, 409, 409]
    stored = api.ok("GET", f"/manifests/{manifest_id}/face-links")["items"]
    kinds = {frozenset((x["asset_a"], x["asset_b"])): x["kind"] for x in stored}
    assert kinds[frozenset((a, stranger))] == "same" and frozenset((a, b)) in kinds
    groups = groups_of(api, manifest_id)
    for pair, kind in kinds.items():
        x, y = sorted(pair)
        assert (groups[x] == groups[y]) == (kind == "same")


def test_face_review_lists_the_runs_close_pairs_until_a_link_resolves_them(
    api: Api, dispatcher: RecordingDispatcher, offline_models: Models
) -> None:
    # A strict analyzer: only identical faces are one person, and every other pair is close.
    strict = dataclasses.replace(offline_models, faces=StrictFaces(offline_models.faces))
    manifest_id = api.manifest("Look-alikes")["id"]
    upload(api, manifest_id, "Tom_Hanks_54745.png")
    upload(api, manifest_id, "zidane.jpg")
    job = process(api, manifest_id, strict)

    review = api.ok("GET", f"/manifests/{manifest_id}/face-review")["items"]
    assert review and len(review) == job["counters"]["ambiguous_face_pairs"]
    first = review[0]
    assert first["job_id"] == job["id"]
    assert first["asset_a"]["image"]["thumbnail_url"].endswith("/thumbnail")
    assert first["asset_a"]["face_group_id"] != first["asset_b"]["face_group_id"]
    similarities = [p["similarity"] for p in review]
    assert similarities == sorted(similarities, reverse=True)

    a, b = first["asset_a"]["id"], first["asset_b"]["id"]
    assert link(api, manifest_id, a, b, "same").status_code == 201
    after = api.ok("GET", f"/manifests/{manifest_id}/face-review")["items"]
    assert {(p["asset_a"]["id"], p["asset_b"]["id"]) for p in after}.isdisjoint({(a, b)})
    assert len(after) < len(review)
    groups = groups_of(api, manifest_id)
    assert groups[a] == groups[b]


@dataclasses.dataclass
class StrictFaces:
    inner: Any
    same_person_threshold: float = 0.99
    ambiguous_margin: float = 0.99

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_links_are_refused_while_the_manifest_is_processing_and_for_faceless_assets(
    api: Api, two_of_tom: Callable[[], tuple[str, str, str, str]]
) -> None:
    fresh = api.manifest("Unprocessed")["id"]
    photo = upload(api, fresh, "Tom_Hanks_54745.png")["id"]
    bare = api.asset(fresh)["id"]
    faceless = link(api, fresh, photo, bare, "same")
    assert faceless.status_code == 422
    assert "process the manifest first" in faceless.get_json()["error"]["message"]
    assert link(api, fresh, photo, photo, "same").status_code == 422
    assert link(api, fresh, photo, "nope", "same").status_code == 422
    assert link(api, fresh, photo, bare, "maybe").status_code == 422

    manifest_id, a, b, _ = two_of_tom()
    api.ok("POST", f"/manifests/{manifest_id}/process", 202)  # not run: stays processing
    busy = link(api, manifest_id, a, b, "different")
    assert busy.status_code == 409
    assert "being processed" in busy.get_json()["error"]["message"]
    assert api.ok("GET", f"/manifests/{manifest_id}/face-links")["items"] == []
    assert (
        api.call("GET", f"/manifests/{manifest_id}/face-links", user="mallory").status_code == 404
    )
    assert (
        api.call("GET", f"/manifests/{manifest_id}/face-review", user="mallory").status_code == 404
    )
