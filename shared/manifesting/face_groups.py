"""Which faces of a manifest are the same person (E4), and where new faces belong (E7).

Grouping is transitive: two faces whose embeddings are at least `threshold` alike are the
same person, and so is everyone linked to them by a chain of such pairs (union-find over all
pairs, not a greedy pass that keeps whichever group a face met first). On top of that:
- must-link pairs are joined whatever their similarity (a person told us);
- cannot-link pairs are never joined: edges are taken by descending similarity and one that
  would put a cannot-link pair into one group is skipped, so the strongest evidence wins;
- pairs just below the threshold (within `ambiguous_margin`) that end in different groups
  are reported for review instead of being merged;
- each group has one primary: the face with the highest score (quality or detection
  confidence, supplied by the caller), ties going to the lowest index.

Similarities are computed in row blocks (`BLOCK_ELEMENTS` floats at a time) and only the
pairs above the review band are kept, so 50k x 512 embeddings never need the 10 GB N x N
matrix. Edges are applied to the union-find per block, vectorised; only components that
contain a cannot-link pair are replayed edge by edge in similarity order, which is exactly
what processing all edges in that order would give: edges never cross components, and a
component without a cannot-link pair has no edge to skip.

Embeddings are compared by dot product: the caller passes L2-normalised vectors of one model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
Pair = tuple[int, int]

BLOCK_ELEMENTS = 1 << 23
"""Similarities held at once (32 MiB of float32): rows per block = BLOCK_ELEMENTS // N."""


class ConstraintConflict(ValueError):
    """Must-link pairs (or the existing groups being extended) put a cannot-link pair into
    one group: the constraints contradict each other and no grouping can honour them."""


@dataclass(frozen=True)
class AmbiguousPair:
    first: int
    second: int
    similarity: float


@dataclass(frozen=True)
class FaceGroups:
    labels: IndexArray
    """Group label per face. group_faces numbers groups 0, 1, … in order of their first
    face; match_faces keeps the existing labels and numbers new groups after the largest."""
    primaries: dict[int, int]
    """Label → index of the group's primary face."""
    ambiguous: list[AmbiguousPair]
    """Pairs in different groups within the margin below the threshold, most alike first."""
    merged: dict[int, int] = field(default_factory=dict)
    """match_faces only: existing label → the label it was merged into, when a new face
    links two existing groups (a full regrouping would join them too)."""

    def groups(self) -> dict[int, list[int]]:
        """Label → indices of its faces, ascending."""
        out: dict[int, list[int]] = {}
        for index, label in enumerate(self.labels.tolist()):
            out.setdefault(int(label), []).append(index)
        return out


def group_faces(
    embeddings: npt.ArrayLike,
    *,
    threshold: float,
    ambiguous_margin: float = 0.0,
    scores: npt.ArrayLike | None = None,
    must_link: Iterable[Pair] = (),
    cannot_link: Iterable[Pair] = (),
) -> FaceGroups:
    """Groups N faces given their (N, D) normalised embeddings. `scores` (N,) choose each
    group's primary. Pairs are indices into `embeddings`. Raises ConstraintConflict when the
    must-link pairs join a cannot-link pair."""
    vectors = _as_matrix(embeddings)
    return _group(
        vectors,
        threshold=threshold,
        margin=ambiguous_margin,
        scores=_as_scores(scores, len(vectors)),
        must_link=_as_pairs(must_link, len(vectors)),
        cannot_link=_as_pairs(cannot_link, len(vectors)),
        existing_labels=None,
    )


def match_faces(
    existing: npt.ArrayLike,
    existing_labels: npt.ArrayLike,
    new: npt.ArrayLike,
    *,
    threshold: float,
    ambiguous_margin: float = 0.0,
    existing_scores: npt.ArrayLike | None = None,
    new_scores: npt.ArrayLike | None = None,
    must_link: Iterable[Pair] = (),
    cannot_link: Iterable[Pair] = (),
) -> FaceGroups:
    """Places new faces among existing groups without regrouping the old faces (E7).

    Indices, in the result and in the pairs, run over existing faces first (0 … M-1), then
    new ones (M … M+N-1). Existing groups are kept whole; every pair that involves a new face
    is an edge, so a new face joins the group it is most alike (at or above the threshold),
    links groups a chain runs through, or starts a new group. When the existing labels came
    from group_faces with the same threshold and no cannot-link pair was skipped, the result
    is the partition group_faces would give for all faces; with skipped cannot-link edges it
    can differ where a full regrouping would reorder them, and existing groups stay as they
    were. Raises ConstraintConflict when an existing group or a must-link pair already holds
    a cannot-link pair (regroup everything then).
    """
    old, added = _as_matrix(existing), _as_matrix(new)
    if old.shape[1] != added.shape[1] and len(old) and len(added):
        raise ValueError(f"embedding sizes differ: {old.shape[1]} and {added.shape[1]}")
    labels = np.asarray(existing_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(old):
        raise ValueError(f"{len(old)} existing embeddings but {len(labels)} labels")
    width = old.shape[1] if len(old) else added.shape[1]
    vectors = np.concatenate((old.reshape(-1, width), added.reshape(-1, width)))
    total = len(vectors)
    scores = np.concatenate(
        (_as_scores(existing_scores, len(old)), _as_scores(new_scores, len(added)))
    )
    return _group(
        vectors,
        threshold=threshold,
        margin=ambiguous_margin,
        scores=scores,
        must_link=_as_pairs(must_link, total),
        cannot_link=_as_pairs(cannot_link, total),
        existing_labels=labels,
    )


def _group(
    vectors: FloatArray,
    *,
    threshold: float,
    margin: float,
    scores: FloatArray,
    must_link: IndexArray,
    cannot_link: IndexArray,
    existing_labels: IndexArray | None,
) -> FaceGroups:
    count = len(vectors)
    first_new = 0 if existing_labels is None else len(existing_labels)
    parent = np.arange(count, dtype=np.int64)
    if existing_labels is not None and first_new:
        _, first_of_label, label_of = np.unique(
            existing_labels, return_index=True, return_inverse=True
        )
        members = np.arange(first_new, dtype=np.int64)
        _link(parent, members, first_of_label[label_of].astype(np.int64))
    _link(parent, must_link[:, 0], must_link[:, 1])
    forced = parent.copy()
    clashing = forced[cannot_link[:, 0]] == forced[cannot_link[:, 1]]
    if clashing.any():
        a, b = (int(v) for v in cannot_link[np.argmax(clashing)])
        raise ConstraintConflict(
            f"faces {a} and {b} must not be grouped, but must-links or existing groups join them"
        )

    low = threshold - max(0.0, margin)
    band: list[tuple[IndexArray, IndexArray, FloatArray]] = []
    for first, second, similarity in _pairs_above(vectors, low, first_new):
        strong = similarity >= threshold
        _link(parent, first[strong], second[strong])
        weak = ~strong
        first, second, similarity = first[weak], second[weak], similarity[weak]
        # A weak pair already inside one component can only end in different groups if a
        # cannot-link splits that component, and those are replayed (band included) below.
        apart = parent[first] != parent[second]
        band.append((first[apart], second[apart], similarity[apart]))

    roots = parent
    root_a, root_b = roots[cannot_link[:, 0]], roots[cannot_link[:, 1]]
    split = np.unique(root_a[root_a == root_b])
    if split.size:
        # Weak pairs inside a split component are found again by its replay.
        in_split = np.isin(roots, split)
        band = [
            (a[keep], b[keep], s[keep])
            for a, b, s in band
            for keep in [~(in_split[a] & (roots[a] == roots[b]))]
        ]
        for root in split.tolist():
            members = np.flatnonzero(roots == root)
            band.append(
                _replay(parent, forced, vectors, members, threshold, low, first_new, cannot_link)
            )
        _compress(parent)
        roots = parent

    labels, merged = _labels(roots, existing_labels)
    return FaceGroups(
        labels=labels,
        primaries=_primaries(labels, scores),
        ambiguous=_ambiguous(band, roots, cannot_link),
        merged=merged,
    )


def _pairs_above(
    vectors: FloatArray, low: float, first_new: int
) -> Iterable[tuple[IndexArray, IndexArray, FloatArray]]:
    """Pairs (i, j), j < i, i >= first_new, with similarity >= low, one row block at a time."""
    count = len(vectors)
    rows = max(1, BLOCK_ELEMENTS // max(1, count))
    for start in range(first_new, count, rows):
        stop = min(count, start + rows)
        similarity = vectors[start:stop] @ vectors[:stop].T
        hit = similarity >= low
        # Each pair once: only columns left of the diagonal.
        hit[:, start:] &= np.tri(stop - start, k=-1, dtype=bool)
        row, column = np.nonzero(hit)
        yield row.astype(np.int64) + start, column.astype(np.int64), similarity[row, column]


def _replay(
    parent: IndexArray,
    forced: IndexArray,
    vectors: FloatArray,
    members: IndexArray,
    threshold: float,
    low: float,
    first_new: int,
    cannot_link: IndexArray,
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """Regroups one component that holds a cannot-link pair: from the forced groups
    (must-links, existing groups), edges by descending similarity, skipping any whose merge
    would join a cannot-link pair. Returns the component's pairs in the review band."""
    parent[members] = forced[members]
    local = vectors[members]
    firsts: list[IndexArray] = []
    seconds: list[IndexArray] = []
    values: list[FloatArray] = []
    for a, b, s in _pairs_above(local, low, 0):
        first, second = members[a], members[b]
        involves_new = (first >= first_new) | (second >= first_new)
        firsts.append(first[involves_new])
        seconds.append(second[involves_new])
        values.append(s[involves_new])
    first = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    second = np.concatenate(seconds) if seconds else np.zeros(0, np.int64)
    similarity = np.concatenate(values) if values else np.zeros(0, np.float32)
    strong = similarity >= threshold
    order = np.lexsort((second[strong], first[strong], -similarity[strong]))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    inside = np.isin(cannot_link[:, 0], members)
    forbidden: dict[int, set[int]] = {}
    for a, b in cannot_link[inside].tolist():
        forbidden.setdefault(find(a), set()).add(b)
        forbidden.setdefault(find(b), set()).add(a)
    for a, b in zip(first[strong][order].tolist(), second[strong][order].tolist(), strict=True):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            continue
        partners_a, partners_b = forbidden.get(root_a, set()), forbidden.get(root_b, set())
        smaller, other = (
            (partners_a, root_b) if len(partners_a) <= len(partners_b) else (partners_b, root_a)
        )
        if any(find(p) == other for p in smaller):
            continue
        keep, drop = min(root_a, root_b), max(root_a, root_b)
        parent[drop] = keep
        if partners_a or partners_b:
            forbidden[keep] = partners_a | partners_b
            forbidden.pop(drop, None)
    weak = ~strong
    return first[weak], second[weak], similarity[weak]


def _link(parent: IndexArray, first: IndexArray, second: IndexArray) -> None:
    """Unions every pair (first[k], second[k]), vectorised: each round hooks the larger root
    of every unjoined pair under the smallest root it is paired with, then flattens the
    trees. Roots stay the smallest index of their component."""
    _compress(parent)
    while len(first):
        root_a, root_b = parent[first], parent[second]
        apart = root_a != root_b
        if not apart.any():
            return
        first, second = first[apart], second[apart]
        low = np.minimum(root_a[apart], root_b[apart])
        high = np.maximum(root_a[apart], root_b[apart])
        np.minimum.at(parent, high, low)
        _compress(parent)


def _compress(parent: IndexArray) -> None:
    """Points every node straight at its root (pointer jumping, in place)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _labels(
    roots: IndexArray, existing_labels: IndexArray | None
) -> tuple[IndexArray, dict[int, int]]:
    unique_roots, group_of = np.unique(roots, return_inverse=True)
    if existing_labels is None or not len(existing_labels):
        return group_of.astype(np.int64), {}
    first_new = len(existing_labels)
    # A group's root is its lowest index: an existing face whenever the group has one.
    next_label = int(existing_labels.max()) + 1
    label_of_group = np.empty(len(unique_roots), dtype=np.int64)
    old_roots = unique_roots < first_new
    label_of_group[old_roots] = existing_labels[unique_roots[old_roots]]
    label_of_group[~old_roots] = next_label + np.arange(int((~old_roots).sum()), dtype=np.int64)
    labels = label_of_group[group_of]
    merged = {
        int(old): int(new)
        for old, new in zip(existing_labels.tolist(), labels[:first_new].tolist(), strict=True)
        if old != new
    }
    return labels, merged


def _primaries(labels: IndexArray, scores: FloatArray) -> dict[int, int]:
    index = np.arange(len(labels), dtype=np.int64)
    order = np.lexsort((index, -scores, labels))
    ordered = labels[order]
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    return {int(k): int(v) for k, v in zip(ordered[starts], order[starts], strict=True)}


def _ambiguous(
    band: list[tuple[IndexArray, IndexArray, FloatArray]],
    roots: IndexArray,
    cannot_link: IndexArray,
) -> list[AmbiguousPair]:
    if not band:
        return []
    first = np.concatenate([a for a, _, _ in band])
    second = np.concatenate([b for _, b, _ in band])
    similarity = np.concatenate([s for _, _, s in band])
    apart = roots[first] != roots[second]
    low = np.minimum(first[apart], second[apart])
    high = np.maximum(first[apart], second[apart])
    similarity = similarity[apart]
    # Told apart already: a review would only ask the same question again.
    told = {(min(a, b), max(a, b)) for a, b in cannot_link.tolist()}
    order = np.lexsort((high, low, -similarity))
    return [
        AmbiguousPair(a, b, float(s))
        for a, b, s in zip(
            low[order].tolist(), high[order].tolist(), similarity[order].tolist(), strict=True
        )
        if (a, b) not in told
    ]


def _as_matrix(embeddings: npt.ArrayLike) -> FloatArray:
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim == 1 and matrix.size == 0:
        return matrix.reshape(0, 0)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be an (N, D) matrix, not shape {matrix.shape}")
    return matrix


def _as_scores(scores: npt.ArrayLike | None, count: int) -> FloatArray:
    if scores is None:
        return np.zeros(count, dtype=np.float32)
    values = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(values) != count:
        raise ValueError(f"{count} faces but {len(values)} scores")
    return values


def _as_pairs(pairs: Iterable[Pair], count: int) -> IndexArray:
    array = np.array([(int(a), int(b)) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    if array.size and (array.min() < 0 or array.max() >= count):
        raise IndexError(f"a constraint names a face outside 0..{count - 1}")
    kept: IndexArray = array[array[:, 0] != array[:, 1]]
    return kept
