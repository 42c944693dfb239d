"""Incremental face grouping on assets, face links and their contradictions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from shared.manifesting.face_groups import ConstraintConflict
from shared.manifesting.grouping import (
    assign_face_groups,
    assign_new_faces,
    link_contradiction,
)
from shared.models.assets import Asset, AssetType, BoundingBox, FaceEmbedding

MODEL = "arcface-test"
THRESHOLD, MARGIN = 0.5, 0.1


@dataclass(frozen=True)
class Link:
    asset_a: str
    asset_b: str
    kind: str


def face(id_: str, vector: np.ndarray, source: str | None = None, left: int = 0) -> Asset:
    return Asset(
        id=id_, manifest_id="m", asset_type=AssetType.CHARACTER, manifest_tag=id_, name=id_,
        source_asset_id=source,
        crop_bbox=BoundingBox(x=left, y=0, width=100, height=200) if source else None,
        face_embedding=FaceEmbedding(model=MODEL, vector=vector.tolist()),
        face_confidence=0.5 + 0.5 * (hash(id_) % 97) / 97,
        face_bbox=BoundingBox(x=0, y=0, width=10, height=10),
    )  # fmt: skip


def library(seed: int, count: int = 300) -> tuple[list[Asset], list[Link]]:
    """People with look-alikes, photos of two people (cropped apart, so never one person
    by the same-photo rule), and a person's links: "same" within a person, "different"
    between look-alikes."""
    rng = np.random.default_rng(seed)
    dim, people = 64, 24
    centres = rng.standard_normal((people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for twin in range(1, people, 3):
        centres[twin] = 0.75 * centres[twin - 1] + 0.6 * centres[twin]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = rng.integers(0, people, count)
    vectors = (
        centres[person] + rng.standard_normal((count, dim)) * rng.uniform(0.5, 1.1, (count, 1)) / 8
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assets = []
    for i in range(count):
        # Every fifth pair of consecutive faces is two people cropped from one photo.
        photo = f"photo-{i // 2}" if (i // 2) % 5 == 0 else None
        assets.append(face(f"a{i:04d}", vectors[i].astype(np.float32), photo, left=300 * (i % 2)))
    links: list[Link] = []
    for _ in range(12):
        a = int(rng.integers(count))
        b = int(rng.choice(np.flatnonzero(person == person[a])))
        links.append(Link(assets[a].id, assets[b].id, "same"))
    for _ in range(12):
        a = int(rng.integers(count))
        twins = np.flatnonzero(np.abs(person - person[a]) == 1)
        if len(twins):
            links.append(Link(assets[a].id, assets[int(rng.choice(twins))].id, "different"))
    consistent: list[Link] = []
    for link in links:
        if link_contradiction(consistent, link) is None:
            consistent.append(link)
    return assets, consistent


def unit(values: list[float]) -> np.ndarray:
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


def stored(assets: list[Asset], groups: dict[str, str], primaries: set[str]) -> list[Asset]:
    return [
        a.model_copy(update={"face_group_id": groups.get(a.id), "is_face_group_primary": a.id in primaries})
        for a in assets
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_new_faces_get_the_groups_ids_and_review_pairs_of_a_full_regrouping(seed: int) -> None:
    assets, links = library(seed)
    ends = [120, 180, 181, 260, 300]
    present = {a.id for a in assets[:120]}
    first = assign_face_groups(assets[:120], model=MODEL, threshold=THRESHOLD, ambiguous_margin=MARGIN,
                               links=[k for k in links if {k.asset_a, k.asset_b} <= present])  # fmt: skip
    current = stored(assets[:120], first.groups, first.primaries)
    previous_pairs = {(a, b) for a, b, _ in first.ambiguous_pairs}
    for start, stop in itertools.pairwise(ends):
        batch = current + assets[start:stop]
        # Links count once both assets exist; an asset that is not there yet is ignored.
        incremental = assign_new_faces(batch, model=MODEL, threshold=THRESHOLD, ambiguous_margin=MARGIN, links=links)  # fmt: skip
        full = assign_face_groups(batch, model=MODEL, threshold=THRESHOLD, ambiguous_margin=MARGIN, links=links)  # fmt: skip
        assert incremental.groups == full.groups  # the same ids, not only the same partition
        assert incremental.primaries == full.primaries
        reported = {(a, b) for a, b, _ in incremental.ambiguous_pairs}
        expected = {(a, b) for a, b, _ in full.ambiguous_pairs}
        new_ids = {a.id for a in assets[start:stop]}
        assert {p for p in expected if new_ids & set(p)} <= reported <= expected
        linked = {tuple(sorted((k.asset_a, k.asset_b))) for k in links}
        still = {
            (a, b)
            for a, b in previous_pairs
            if full.groups[a] != full.groups[b] and (a, b) not in linked
        }
        assert expected == reported | still
        for link in links:
            if {link.asset_a, link.asset_b} <= full.groups.keys():
                together = full.groups[link.asset_a] == full.groups[link.asset_b]
                assert together == (link.kind == "same")
        assert new_ids <= incremental.regrouped
        current = stored(batch, incremental.groups, incremental.primaries)
        previous_pairs = expected


def test_two_people_of_one_photo_stay_apart_when_matched_incrementally() -> None:
    left = face("left", unit([1.0, 0.2, 0.0]), source="photo", left=0)
    right = face("right", unit([1.0, 0.25, 0.0]), source="photo", left=300)
    grouped = assign_face_groups([left], model=MODEL, threshold=0.8, ambiguous_margin=0.1)
    matched = assign_new_faces([*stored([left], grouped.groups, grouped.primaries), right],
                               model=MODEL, threshold=0.8, ambiguous_margin=0.1)  # fmt: skip
    assert matched.groups["left"] != matched.groups["right"]
    same = [Link("left", "right", "same")]  # a person's word wins over the photo rule
    joined = assign_new_faces([*stored([left], grouped.groups, grouped.primaries), right],
                              model=MODEL, threshold=0.8, ambiguous_margin=0.1, links=same)  # fmt: skip
    assert joined.groups["left"] == joined.groups["right"] == grouped.groups["left"]


def test_a_different_link_splits_faces_that_look_alike_and_each_keeps_its_neighbours() -> None:
    angles = {"a": 0, "b": 10, "c": 20, "d": 30}
    assets = [face(k, np.array([np.cos(np.radians(v)), np.sin(np.radians(v)), 0], np.float32)) for k, v in angles.items()]  # fmt: skip
    together = assign_face_groups(assets, model=MODEL, threshold=0.9, ambiguous_margin=0.05)
    assert together.group_count == 1
    apart = assign_face_groups(assets, model=MODEL, threshold=0.9, ambiguous_margin=0.05,
                               links=[Link("a", "d", "different")])  # fmt: skip
    assert apart.groups["a"] != apart.groups["d"]
    assert apart.group_count == 2
    # Matching after the link (no new face) splits the same way; the larger side keeps the id.
    grouped = stored(assets, together.groups, together.primaries)
    cut = [Link("a", "d", "different")]
    again = assign_new_faces(grouped, model=MODEL, threshold=0.9, ambiguous_margin=0.05, links=cut)
    full = assign_face_groups(grouped, model=MODEL, threshold=0.9, ambiguous_margin=0.05, links=cut)
    assert again.groups == full.groups
    assert len({again.groups[k] for k in "abcd"}) == 2
    assert together.groups["a"] in again.groups.values()


def test_a_same_chain_across_a_different_link_is_a_contradiction_named_by_its_chain() -> None:
    links = [Link("a", "b", "same"), Link("b", "c", "same"), Link("x", "y", "different")]
    found = link_contradiction(links, Link("c", "a", "different"))
    assert found is not None
    assert found.chain == ["c", "b", "a"] and found.different == ("c", "a")
    assert str(found) == "c – b – a are linked as the same person, but c and a as different people"
    across = link_contradiction([*links, Link("c", "z", "different")], Link("z", "a", "same"))
    assert across is not None
    assert across.chain == ["c", "b", "a", "z"] and across.different == ("c", "z")
    assert link_contradiction(links, Link("a", "x", "same")) is None
    assert link_contradiction(links, Link("a", "c", "same")) is None  # already one person
    assert link_contradiction(links, Link("a", "x", "different")) is None
    opposite = link_contradiction([Link("a", "b", "different")], Link("b", "a", "same"))
    assert opposite is not None and opposite.chain == ["a", "b"]
    self_link = link_contradiction([], Link("a", "a", "different"))
    assert self_link is not None and self_link.chain == ["a"]
    with pytest.raises(ValueError, match="'same' or 'different'"):
        link_contradiction([], Link("a", "b", "maybe"))


def test_grouping_with_contradicting_links_is_refused() -> None:
    v = np.array([1, 0, 0], np.float32)
    assets = [face("a", v), face("b", v), face("c", v)]
    links = [Link("a", "b", "same"), Link("b", "c", "same"), Link("a", "c", "different")]
    with pytest.raises(ConstraintConflict):
        assign_face_groups(assets, model=MODEL, threshold=0.5, ambiguous_margin=0.1, links=links)


def _applied(assets: list[Asset], groups: dict[str, str]) -> list[Asset]:
    return [a.model_copy(update={"face_group_id": groups.get(a.id)}) for a in assets]


def test_a_manifest_is_matched_incrementally_only_while_its_last_grouping_holds() -> None:
    from shared.manifesting.grouping import group_manifest_faces

    assets, links = library(seed=7, count=120)
    settings = {"model": MODEL, "threshold": THRESHOLD, "ambiguous_margin": MARGIN}
    first = group_manifest_faces(assets[:100], **settings, links=links, last_digest=None)
    assert not first.incremental
    grouped = _applied(assets[:100], first.assignment.groups)

    more = group_manifest_faces(
        grouped + assets[100:], **settings, links=links, last_digest=first.digest
    )
    assert more.incremental
    full = assign_face_groups(grouped + assets[100:], **settings, links=links)
    assert more.assignment.groups == full.groups

    # A face gone, a face embedded anew, a link gone, another threshold: every face again.
    moved = grouped[1].model_copy(
        update={
            "face_embedding": FaceEmbedding(model=MODEL, vector=grouped[0].face_embedding.vector)
        }  # type: ignore[union-attr]
    )
    for changed, changed_links, threshold in [
        (grouped[1:], links, THRESHOLD),
        ([grouped[0], moved, *grouped[2:]], links, THRESHOLD),
        (grouped, links[1:], THRESHOLD),
        (grouped, links, THRESHOLD + 0.01),
    ]:
        again = group_manifest_faces(
            changed, model=MODEL, threshold=threshold, ambiguous_margin=MARGIN,
            links=changed_links, last_digest=first.digest,
        )  # fmt: skip
        assert not again.incremental
