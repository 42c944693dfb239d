"""Face grouping across a manifest (E4) and incremental matching of new faces (E7)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shared.manifesting import face_groups
from shared.manifesting.face_groups import (
    ConstraintConflict,
    group_faces,
    match_faces,
)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def at_angle(degrees: float) -> np.ndarray:
    """A unit vector in the plane of the first two axes: cosine similarity between two of
    them is the cosine of the angle between them."""
    radians = np.radians(degrees)
    return unit(float(np.cos(radians)), float(np.sin(radians)), 0.0)


def canonical(labels: np.ndarray) -> list[int]:
    """Labels renumbered by first appearance, so two partitions compare equal."""
    seen: dict[int, int] = {}
    return [seen.setdefault(int(label), len(seen)) for label in labels]


def clustered(
    count: int, clusters: int, *, dim: int = 64, spread: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, clusters, count)
    noise = rng.standard_normal((count, dim)).astype(np.float32) * spread / np.sqrt(dim)
    vectors = centres[truth] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


def reference_grouping(
    vectors: np.ndarray,
    threshold: float,
    must: list[tuple[int, int]],
    cannot: list[tuple[int, int]],
) -> list[int]:
    """The definition, spelt out: must-links first, then every pair at or above the
    threshold by descending similarity, skipped when it would join a cannot-link pair."""
    count = len(vectors)
    group = list(range(count))

    def members(g: int) -> set[int]:
        return {i for i in range(count) if group[i] == g}

    def join(a: int, b: int) -> None:
        old, new = max(group[a], group[b]), min(group[a], group[b])
        for i in members(old):
            group[i] = new

    for a, b in must:
        join(a, b)
    similarity = vectors @ vectors.T
    edges = sorted(
        (float(-similarity[i, j]), i, j)
        for i, j in itertools.combinations(range(count), 2)
        if similarity[i, j] >= threshold
    )
    for _, i, j in edges:
        if group[i] == group[j]:
            continue
        union = members(group[i]) | members(group[j])
        if any(a in union and b in union for a, b in cannot):
            continue
        join(i, j)
    return canonical(np.array(group))


def test_grouping_is_transitive_when_the_ends_of_a_chain_are_not_alike() -> None:
    a, b, c = at_angle(0), at_angle(40), at_angle(80)  # a~b and b~c at 0.77, a~c at 0.17
    result = group_faces([a, b, c], threshold=0.7)
    assert result.labels.tolist() == [0, 0, 0]
    assert result.groups() == {0: [0, 1, 2]}


def test_unrelated_faces_stay_in_groups_of_their_own() -> None:
    result = group_faces([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)], threshold=0.5)
    assert result.labels.tolist() == [0, 1, 2]
    assert result.primaries == {0: 0, 1: 1, 2: 2}


def test_a_cannot_link_keeps_the_chain_apart_and_the_middle_face_joins_its_closer_end() -> None:
    a, b, c = at_angle(0), at_angle(35), at_angle(80)  # b~a 0.82 beats b~c 0.71
    result = group_faces([a, b, c], threshold=0.7, cannot_link=[(2, 0)])
    assert result.labels.tolist() == [0, 0, 1]


def test_a_cannot_link_inside_a_large_component_splits_only_that_component() -> None:
    vectors, _ = clustered(60, 3, spread=0.3, seed=1)
    base = group_faces(vectors, threshold=0.8)
    first_group = [i for i, label in enumerate(base.labels) if label == base.labels[0]]
    cut = (first_group[0], first_group[-1])
    result = group_faces(vectors, threshold=0.8, cannot_link=[cut])
    assert result.labels[cut[0]] != result.labels[cut[1]]
    others = [i for i in range(60) if base.labels[i] != base.labels[0]]
    assert canonical(result.labels[others]) == canonical(base.labels[others])


def test_must_link_joins_faces_that_do_not_look_alike() -> None:
    vectors = [unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]
    result = group_faces(vectors, threshold=0.5, must_link=[(0, 2)])
    assert result.labels.tolist() == [0, 1, 0]


def test_must_links_that_join_a_cannot_link_pair_are_refused() -> None:
    vectors = [unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]
    with pytest.raises(ConstraintConflict, match="faces 0 and 2"):
        group_faces(vectors, threshold=0.5, must_link=[(0, 1), (1, 2)], cannot_link=[(0, 2)])


def test_each_group_has_one_primary_the_best_scored_face_and_ties_go_to_the_first() -> None:
    a, b, c, d = at_angle(0), at_angle(10), at_angle(20), at_angle(90)
    result = group_faces([a, b, c, d], threshold=0.9, scores=[0.5, 0.9, 0.9, 0.1])
    assert result.labels.tolist() == [0, 0, 0, 1]
    assert result.primaries == {0: 1, 1: 3}
    assert group_faces([a, b], threshold=0.9).primaries == {0: 0}


def test_pairs_just_below_the_threshold_are_reported_for_review_not_merged() -> None:
    a, b, c = at_angle(0), at_angle(50), at_angle(85)  # a~b 0.64, b~c 0.82, a~c 0.09
    result = group_faces([a, b, c, at_angle(180)], threshold=0.7, ambiguous_margin=0.1)
    assert result.labels.tolist() == [0, 1, 1, 2]
    assert len(result.ambiguous) == 1
    pair = result.ambiguous[0]
    assert (pair.first, pair.second) == (0, 1)
    assert pair.similarity == pytest.approx(np.cos(np.radians(50)), abs=1e-6)


def test_review_leaves_out_pairs_that_ended_in_one_group_or_were_told_apart() -> None:
    a, b, c = at_angle(0), at_angle(40), at_angle(50)  # a~b 0.77, a~c 0.64, b~c 0.98
    together = group_faces([a, b, c], threshold=0.7, ambiguous_margin=0.2)
    assert together.labels.tolist() == [0, 0, 0]
    assert together.ambiguous == []
    apart = group_faces([a, at_angle(50)], threshold=0.7, ambiguous_margin=0.2)
    assert [(p.first, p.second) for p in apart.ambiguous] == [(0, 1)]
    assert apart.ambiguous[0].similarity == pytest.approx(np.cos(np.radians(50)), abs=1e-6)
    told = group_faces([a, at_angle(50)], threshold=0.7, ambiguous_margin=0.2, cannot_link=[(0, 1)])
    assert told.ambiguous == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grouping_in_small_blocks_equals_the_definition_with_constraints(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(face_groups, "BLOCK_ELEMENTS", 50)  # one or two rows per block
    rng = np.random.default_rng(seed)
    vectors, _ = clustered(40, 5, dim=8, spread=1.2, seed=seed)
    cannot = [(int(a), int(b)) for a, b in (rng.choice(40, 2, replace=False) for _ in range(6))]
    # One must-link, never itself a cannot-link pair, so the constraints cannot contradict.
    must = [(0, 1)] if {(0, 1), (1, 0)}.isdisjoint(cannot) else []
    result = group_faces(vectors, threshold=0.6, must_link=must, cannot_link=cannot)
    assert canonical(result.labels) == reference_grouping(vectors, 0.6, must, cannot)
    for a, b in cannot:
        assert result.labels[a] != result.labels[b]


def test_the_ambiguous_pairs_are_exactly_the_weak_pairs_across_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(face_groups, "BLOCK_ELEMENTS", 64)
    vectors, _ = clustered(50, 6, dim=8, spread=1.0, seed=7)
    cannot = [(3, 11), (20, 41)]
    result = group_faces(vectors, threshold=0.7, ambiguous_margin=0.15, cannot_link=cannot)
    similarity = vectors @ vectors.T
    expected = {
        (i, j)
        for i, j in itertools.combinations(range(50), 2)
        if 0.55 <= similarity[i, j] < 0.7
        and result.labels[i] != result.labels[j]
        and (i, j) not in cannot
    }
    assert {(p.first, p.second) for p in result.ambiguous} == expected
    values = [p.similarity for p in result.ambiguous]
    assert values == sorted(values, reverse=True)


def test_incremental_matching_gives_the_partition_of_a_full_regrouping() -> None:
    vectors, _ = clustered(600, 30, spread=0.9, seed=3)
    old, new = vectors[:450], vectors[450:]
    existing = group_faces(old, threshold=0.55)
    shifted = existing.labels * 10 + 7  # stored group ids need not be 0..G-1
    matched = match_faces(old, shifted, new, threshold=0.55)
    full = group_faces(vectors, threshold=0.55)
    assert canonical(matched.labels) == canonical(full.labels)
    # Existing faces keep their ids unless a new face merged their group into another.
    for index in range(450):
        label = int(shifted[index])
        assert matched.labels[index] == matched.merged.get(label, label)
    new_groups = set(matched.labels[450:].tolist()) - set(shifted.tolist())
    assert all(label > shifted.max() for label in new_groups)


def test_a_new_face_joins_the_existing_group_it_is_most_like() -> None:
    old = [at_angle(0), at_angle(90)]
    result = match_faces(old, [4, 9], [at_angle(80), at_angle(200)], threshold=0.8)
    assert result.labels.tolist() == [4, 9, 9, 10]
    assert result.merged == {}


def test_a_new_face_that_bridges_two_existing_groups_merges_them_like_a_regrouping_would() -> None:
    old = [at_angle(0), at_angle(70)]  # 0.34 alike: two groups so far
    bridge = at_angle(33)  # 0.84 to the first, 0.80 to the second
    result = match_faces(old, [4, 9], [bridge], threshold=0.75)
    assert result.labels.tolist() == [4, 4, 4]
    assert result.merged == {9: 4}
    refused = match_faces(old, [4, 9], [bridge], threshold=0.75, cannot_link=[(0, 1)])
    assert refused.labels.tolist() == [4, 9, 4]


def test_matching_against_existing_groups_that_break_a_cannot_link_is_refused() -> None:
    with pytest.raises(ConstraintConflict):
        match_faces(
            [at_angle(0), at_angle(5)], [1, 1], [at_angle(90)], threshold=0.8, cannot_link=[(0, 1)]
        )


def test_matching_with_no_existing_faces_is_a_plain_grouping() -> None:
    vectors, _ = clustered(40, 4, seed=5)
    matched = match_faces(np.zeros((0, 64), np.float32), [], vectors, threshold=0.6)
    assert matched.labels.tolist() == group_faces(vectors, threshold=0.6).labels.tolist()


def test_ten_thousand_faces_are_grouped_into_their_people() -> None:
    vectors, truth = clustered(10_000, 500, dim=512, spread=0.8, seed=11)
    scores = np.random.default_rng(0).random(10_000)
    result = group_faces(vectors, threshold=0.5, ambiguous_margin=0.05, scores=scores)
    assert canonical(result.labels) == canonical(truth)
    assert len(result.primaries) == len(set(truth.tolist()))
    for label, primary in result.primaries.items():
        members = np.flatnonzero(result.labels == label)
        assert scores[primary] == scores[members].max()


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="matrix"):
        group_faces(np.zeros((2, 2, 2)), threshold=0.5)
    with pytest.raises(ValueError, match="scores"):
        group_faces(np.eye(3), threshold=0.5, scores=[1.0])
    with pytest.raises(IndexError):
        group_faces(np.eye(3), threshold=0.5, must_link=[(0, 3)])
    with pytest.raises(ValueError, match="labels"):
        match_faces(np.eye(3), [0, 1], np.eye(3), threshold=0.5)
