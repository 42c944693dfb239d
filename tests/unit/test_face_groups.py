"""Face grouping across a manifest (E4) and incremental matching of new faces (E7)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    # An existing face keeps its label unless its group was merged into a larger one.
    untouched = np.setdiff1d(np.arange(450), matched.regrouped)
    assert (matched.labels[untouched] == shifted[untouched]).all()
    new_groups = set(matched.labels[450:].tolist()) - set(shifted.tolist())
    assert all(label > shifted.max() for label in new_groups)


def test_a_new_face_joins_the_existing_group_it_is_most_like() -> None:
    old = [at_angle(0), at_angle(90)]
    result = match_faces(old, [4, 9], [at_angle(80), at_angle(200)], threshold=0.8)
    assert result.labels.tolist() == [4, 9, 9, 10]
    assert result.regrouped.tolist() == [1, 2, 3]


def test_a_new_face_that_bridges_two_existing_groups_merges_them_like_a_regrouping_would() -> None:
    old = [at_angle(0), at_angle(70)]  # 0.34 alike: two groups so far
    bridge = at_angle(33)  # 0.84 to the first, 0.80 to the second
    result = match_faces(old, [4, 9], [bridge], threshold=0.75)
    assert result.labels.tolist() == [4, 4, 4]
    refused = match_faces(old, [4, 9], [bridge], threshold=0.75, cannot_link=[(0, 1)])
    assert refused.labels.tolist() == [4, 9, 4]  # the bridge goes with the face it is closer to


def test_a_new_face_can_move_an_old_one_to_another_group_as_a_regrouping_would() -> None:
    # b sat with a (0.87) rather than c (0.82) because a and c are told apart; a new face
    # very like b and c outweighs a, so a full regrouping puts b with c, and so must this.
    a, b, c = at_angle(0), at_angle(30), at_angle(65)
    old = [a, b, c]
    existing = group_faces(old, threshold=0.8, cannot_link=[(0, 2)])
    assert existing.labels.tolist() == [0, 0, 1]
    new = [at_angle(48)]  # 0.96 to b, 0.97 to c
    matched = match_faces(old, existing.labels, new, threshold=0.8, cannot_link=[(0, 2)])
    full = group_faces(old + new, threshold=0.8, cannot_link=[(0, 2)])
    assert canonical(matched.labels) == canonical(full.labels) == [0, 1, 1, 1]
    # The larger group keeps a label its faces had (the smaller of a tie); a gets a new one.
    assert matched.labels.tolist() == [2, 0, 0, 0]


def test_links_added_between_existing_faces_regroup_only_what_they_touch() -> None:
    vectors = [at_angle(0), at_angle(4), at_angle(10), at_angle(90), at_angle(180)]
    existing = group_faces(vectors, threshold=0.9)
    assert existing.labels.tolist() == [0, 0, 0, 1, 2]
    # "different" inside a group splits it; "same" across groups merges them.
    split = match_faces(vectors, existing.labels, [], threshold=0.9, cannot_link=[(0, 2)])
    assert split.labels.tolist() == [0, 0, 3, 1, 2]  # 1 is nearer 0 (4 degrees) than 2 (6)
    assert split.regrouped.tolist() == [0, 1, 2]
    merged = match_faces(vectors, existing.labels, [], threshold=0.9, must_link=[(3, 4)])
    assert merged.labels.tolist() == [0, 0, 0, 1, 1]
    assert merged.regrouped.tolist() == [3, 4]


def test_matching_refuses_must_links_that_join_a_cannot_link_pair() -> None:
    with pytest.raises(ConstraintConflict, match="faces 0 and 2"):
        match_faces(
            [at_angle(0), at_angle(90)],
            [1, 2],
            [at_angle(180)],
            threshold=0.8,
            must_link=[(0, 1), (1, 2)],
            cannot_link=[(0, 2)],
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


def people(
    rng: np.random.Generator, count: int, identities: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Faces of several people, each its centre plus noise of varying spread; every third
    person has a look-alike (centres about 0.6 alike), so groups touch and review pairs occur."""
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    for twin in range(1, identities, 3):
        centres[twin] = 0.75 * centres[twin - 1] / np.linalg.norm(centres[twin - 1]) + 0.6 * (
            centres[twin] / np.linalg.norm(centres[twin])
        )
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = rng.integers(0, identities, count)
    spread = rng.uniform(0.5, 1.1, count)[:, None]
    noise = rng.standard_normal((count, dim)).astype(np.float32) * spread / np.sqrt(dim)
    vectors = centres[person] + noise.astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), person


def links(
    rng: np.random.Generator, person: np.ndarray, count: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Must-links within a person, cannot-links between look-alikes (as two people of one photo
    would give) and at random, none contradicting the must-links."""
    must: list[tuple[int, int]] = []
    for _ in range(count):
        a = int(rng.integers(len(person)))
        same = np.flatnonzero(person == person[a])
        must.append((a, int(rng.choice(same))))
    component = list(range(len(person)))

    def find(x: int) -> int:
        while component[x] != x:
            x = component[x]
        return x

    for a, b in must:
        component[max(find(a), find(b))] = min(find(a), find(b))
    cannot: list[tuple[int, int]] = []
    for _ in range(3 * count):
        a = int(rng.integers(len(person)))
        twins = np.flatnonzero(np.abs(person - person[a]) == 1)
        b = (
            int(rng.choice(twins))
            if len(twins) and rng.random() < 0.7
            else int(rng.integers(len(person)))
        )
        if find(a) != find(b):
            cannot.append((a, b))
    return must, cannot


def pair_set(result: face_groups.FaceGroups) -> set[tuple[int, int]]:
    return {(p.first, p.second) for p in result.ambiguous}


@pytest.mark.parametrize("seed", range(6))
def test_runs_that_match_only_new_faces_give_what_a_full_regrouping_gives(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faces arrive over several runs; each run matches the new ones against the previous
    run's labels (not the full grouping's), with the links known by then, some of them new
    links between old faces. After every run: the full regrouping's partition and review
    pairs, and the labels of the groups that survived."""
    monkeypatch.setattr(face_groups, "BLOCK_ELEMENTS", 400 if seed % 2 else 1 << 22)
    rng = np.random.default_rng(seed)
    vectors, person = people(rng, 360, 30, 32)
    must, cannot = links(rng, person, 25)
    # Links count once both faces exist, and are known from a random run on (so a link
    # between old faces can arrive with a later run).
    known_from = {pair: int(rng.integers(0, 4)) for pair in [*must, *cannot]}
    threshold, margin = 0.55, 0.12
    ends = [90, 200, 201, 290, 360]

    def known(pairs: list[tuple[int, int]], run: int, faces: int) -> list[tuple[int, int]]:
        return [p for p in pairs if max(p) < faces and known_from[p] <= run]

    labels = group_faces(vectors[:90], threshold=threshold, cannot_link=known(cannot, 0, 90),
                         must_link=known(must, 0, 90), ambiguous_margin=margin).labels  # fmt: skip
    previous = group_faces(vectors[:90], threshold=threshold, ambiguous_margin=margin,
                           must_link=known(must, 0, 90), cannot_link=known(cannot, 0, 90))  # fmt: skip
    for run, (start, stop) in enumerate(itertools.pairwise(ends), start=1):
        must_now, cannot_now = known(must, run, stop), known(cannot, run, stop)
        matched = match_faces(vectors[:start], labels, vectors[start:stop], threshold=threshold,
                              ambiguous_margin=margin, must_link=must_now, cannot_link=cannot_now)  # fmt: skip
        full = group_faces(vectors[:stop], threshold=threshold, ambiguous_margin=margin,
                           must_link=must_now, cannot_link=cannot_now)  # fmt: skip
        assert canonical(matched.labels) == canonical(full.labels)
        assert reference_grouping(vectors[:stop], threshold, must_now, cannot_now) == canonical(
            full.labels
        )
        for a, b in cannot_now:
            assert matched.labels[a] != matched.labels[b]
        # Review: the run reports the full list's pairs with a new face, and those among old
        # faces whose groups it worked out again; the rest of the full list is the previous
        # list's pairs that are still apart and not told apart.
        reported, expected = pair_set(matched), pair_set(full)
        assert {(a, b) for a, b in expected if b >= start} <= reported <= expected
        told = {(min(p), max(p)) for p in cannot_now}
        kept = {
            (a, b)
            for a, b in pair_set(previous)
            if matched.labels[a] != matched.labels[b] and (a, b) not in told
        }
        assert expected == reported | kept
        # Groups no new face or link touched keep their labels; so does every old face
        # outside `regrouped`, and a changed group keeps a label its faces had if it can.
        untouched = np.setdiff1d(np.arange(start), matched.regrouped)
        assert (matched.labels[untouched] == labels[untouched]).all()
        for label in set(labels.tolist()):
            old_members = set(np.flatnonzero(labels == label).tolist())
            now = set(np.flatnonzero(matched.labels == matched.labels[min(old_members)]).tolist())
            if old_members <= now and {i for i in now if i < start} == old_members:
                assert matched.labels[min(old_members)] == label  # it survived, maybe grown
        labels, previous = matched.labels, full


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(2, 24),
    split=st.floats(0.0, 1.0),
    threshold=st.floats(0.3, 0.95),
)
def test_matching_equals_a_full_regrouping_on_small_random_cases(
    seed: int, count: int, split: float, threshold: float
) -> None:
    """Low dimensions and few faces: chains, bridges and splits everywhere."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first_new = int(split * count)
    person = rng.integers(0, 4, count)
    must, cannot = links(rng, person, int(rng.integers(0, 4)))
    old_must = [p for p in must if max(p) < first_new and rng.random() < 0.7]
    old_cannot = [p for p in cannot if max(p) < first_new and rng.random() < 0.7]
    existing = group_faces(vectors[:first_new], threshold=threshold, ambiguous_margin=0.1,
                           must_link=old_must, cannot_link=old_cannot)  # fmt: skip
    matched = match_faces(vectors[:first_new], existing.labels * 3 + 1, vectors[first_new:],
                          threshold=threshold, ambiguous_margin=0.1, must_link=must,
                          cannot_link=cannot)  # fmt: skip
    full = group_faces(vectors, threshold=threshold, ambiguous_margin=0.1, must_link=must,
                       cannot_link=cannot)  # fmt: skip
    assert canonical(matched.labels) == canonical(full.labels)
    told = {(min(p), max(p)) for p in cannot}
    kept = {
        (a, b)
        for a, b in pair_set(existing)
        if matched.labels[a] != matched.labels[b] and (a, b) not in told
    }
    assert pair_set(full) == pair_set(matched) | kept
    assert {(a, b) for a, b in pair_set(full) if b >= first_new} <= pair_set(matched)
