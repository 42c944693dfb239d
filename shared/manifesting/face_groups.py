"""Which faces of a manifest are the same person (E4), and where new faces belong (E7).

Grouping is transitive: two faces whose embeddings are at least `threshold` alike are the
same person, and so is everyone linked to them by a chain of such pairs (union-find over all
pairs, not a greedy pass that keeps whichever group a face met first). On top of that:
- must-link pairs are joined whatever their similarity (a person told us);
- cannot-link pairs are never joined: edges are taken by descending similarity and one that
  would put a cannot-link pair into one group is skipped, so the strongest evidence wins and
  two faces told apart always end in different groups, each keeping the faces closer to it;
- pairs just below the threshold (within `ambiguous_margin`) that end in different groups
  are reported for review instead of being merged;
- each group has one primary: the face with the highest score (quality or detection
  confidence, supplied by the caller), ties going to the lowest index.

group_faces computes similarities in square tiles (`BLOCK_ELEMENTS` floats at a time) of the
lower triangle and keeps only the pairs above the review band, so 50k x 512 embeddings never
need the 10 GB N x N matrix. Edges are applied to the union-find per tile, vectorised; only
components that contain a cannot-link pair are replayed edge by edge in similarity order,
which is exactly what processing all edges in that order would give: edges never cross
components, and a component without a cannot-link pair has no edge to skip.

match_faces gives the same groups for old and new faces together as group_faces would, while
computing only the pairs that involve a new face, O(new x all). Why that is exact, given
existing labels that group_faces (or an earlier match_faces) produced under the same threshold:
- a component of the similarity-and-must-link graph that no new face, new must-link or
  cannot-link inside it touches is grouped as it was;
- an old group can only have edges to another old group when a cannot-link pair lies between
  the two (that is why the edge was skipped), so the groups a new face reaches are extended
  along those pairs, tested with the two groups' own similarities, until the region they form
  holds whole components;
- a region without a cannot-link pair inside is one group (merging every group a new face
  bridges, as a full regrouping does); a region with one is regrouped from its faces alone,
  all its pairs included, which is the full regrouping restricted to it.
Links removed since the labels were made, faces removed or re-embedded, or another threshold
can change groups no new face touches: those need group_faces.

Embeddings are compared by dot product: the caller passes L2-normalised vectors of one model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
Pair = tuple[int, int]
Band = tuple[IndexArray, IndexArray, FloatArray]
"""Pairs (first, second) with their similarities, one array each."""

BLOCK_ELEMENTS = 1 << 22
"""Similarities held at once (16 MiB of float32): group_faces works in square tiles of
isqrt(BLOCK_ELEMENTS) faces a side, match_faces in blocks of BLOCK_ELEMENTS // N new faces."""


class ConstraintConflict(ValueError):
    """Must-link pairs put a cannot-link pair into one group: the constraints contradict
    each other and no grouping can honour them."""


@dataclass(frozen=True)
class AmbiguousPair:
    first: int
    second: int
    similarity: float


@dataclass(frozen=True)
class FaceGroups:
    labels: IndexArray
    """Group label per face. group_faces numbers groups 0, 1, … in order of their first
    face; match_faces keeps the existing labels of groups that survive (see match_faces)."""
    primaries: dict[int, int]
    """Label → index of the group's primary face."""
    ambiguous: list[AmbiguousPair]
    """Pairs in different groups within the margin below the threshold, most alike first
    (first < second). match_faces reports those with a new face and those between old faces
    whose groups it worked out again: the full list is these and the earlier list's pairs
    that are still in different groups and not cannot-linked."""
    regrouped: IndexArray
    """Faces whose group this call worked out, ascending (group_faces: all of them). In
    match_faces the others keep their groups unchanged, and so do the review pairs among
    them; a review pair between one of them and a regrouped face stays as it was too."""

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
    count = len(vectors)
    roots, ambiguous = _group(
        vectors,
        threshold=threshold,
        margin=ambiguous_margin,
        must_link=_as_pairs(must_link, count),
        cannot_link=_as_pairs(cannot_link, count),
    )
    # Roots are each group's lowest index: numbering them in order numbers groups by first face.
    labels = np.unique(roots, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return FaceGroups(
        labels=labels,
        primaries=_primaries(labels, _as_scores(scores, count)),
        ambiguous=ambiguous,
        regrouped=np.arange(count, dtype=np.int64),
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
    """Places new faces among existing groups, computing only the pairs with a new face (E7).

    Indices, in the result and in the pairs, run over existing faces first (0 … M-1), then
    new ones (M … M+N-1). `existing_labels` must be the groups group_faces (or match_faces)
    gave the existing faces with this threshold; links added since then, new faces or none,
    are honoured exactly. The partition and the review pairs are those group_faces would give
    for all faces and constraints (see the module's docstring for why). Labels: groups no
    new face or link touched keep theirs; a changed group keeps the label most of its
    existing faces had (larger groups choose first, ties to the smaller label) unless a larger
    one took it, otherwise it gets a new label above every existing one. Raises
    ConstraintConflict when the must-link pairs join a cannot-link pair.
    """
    old, added = _as_matrix(existing), _as_matrix(new)
    if old.shape[1] != added.shape[1] and len(old) and len(added):
        raise ValueError(f"embedding sizes differ: {old.shape[1]} and {added.shape[1]}")
    labels = np.asarray(existing_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(old):
        raise ValueError(f"{len(old)} existing embeddings but {len(labels)} labels")
    width = old.shape[1] if len(old) else added.shape[1]
    old, added = old.reshape(-1, width), added.reshape(-1, width)
    first_new, total = len(old), len(old) + len(added)
    scores = np.concatenate(
        (_as_scores(existing_scores, len(old)), _as_scores(new_scores, len(added)))
    )
    must, cannot = _as_pairs(must_link, total), _as_pairs(cannot_link, total)
    _refuse_contradictions(must, cannot)

    low = threshold - max(0.0, ambiguous_margin)
    first, second, similarity = _concatenated(_pairs_with_new(old, added, low))
    strong = similarity >= threshold
    joined = np.concatenate((np.stack((first[strong], second[strong]), axis=1), must))
    regions = _changed_regions(old, labels, len(added), threshold, joined, cannot)

    out = np.concatenate((labels, np.full(len(added), -1, dtype=np.int64)))
    pieces: list[IndexArray] = []
    band: list[Band] = []
    regrouped_in = np.full(total, -1, dtype=np.int64)
    for region, (members, holds_cannot_link) in enumerate(regions):
        if not holds_cannot_link:
            pieces.append(members)  # one group: every component in it is joined, none split
            continue
        regrouped_in[members] = region
        is_old = members < first_new
        local = np.concatenate((old[members[is_old]], added[members[~is_old] - first_new]))
        roots, found = _group(
            local,
            threshold=threshold,
            margin=ambiguous_margin,
            must_link=_within(members, must),
            cannot_link=_within(members, cannot),
        )
        order = np.argsort(roots, kind="stable")
        bounds = np.flatnonzero(np.diff(roots[order])) + 1
        pieces.extend(members[part] for part in np.split(order, bounds))
        band.append(_as_band(found, members))
    _keep_labels(out, pieces, labels)

    # Review pairs with a new face; those inside a regrouped region came with its regrouping.
    region_of_first = regrouped_in[first]
    weak = ~strong & ((region_of_first < 0) | (region_of_first != regrouped_in[second]))
    band.append((first[weak], second[weak], similarity[weak]))
    changed = np.sort(np.concatenate(pieces)) if pieces else np.zeros(0, np.int64)
    return FaceGroups(
        labels=out,
        primaries=_primaries(out, scores),
        ambiguous=_ambiguous(band, out, cannot),
        regrouped=changed,
    )


def _group(
    vectors: FloatArray,
    *,
    threshold: float,
    margin: float,
    must_link: IndexArray,
    cannot_link: IndexArray,
) -> tuple[IndexArray, list[AmbiguousPair]]:
    """Groups all faces: each face's root (its group's lowest index) and the review pairs."""
    count = len(vectors)
    _refuse_contradictions(must_link, cannot_link)
    parent = np.arange(count, dtype=np.int64)
    _link(parent, must_link[:, 0], must_link[:, 1])
    forced = parent.copy()

    low = threshold - max(0.0, margin)
    band: list[Band] = []
    for first, second, similarity in _pairs_above(vectors, low):
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
            band.append(_replay(parent, forced, vectors, members, threshold, low, cannot_link))
        _compress(parent)
    return parent, _ambiguous(band, parent, cannot_link)


def _pairs_above(vectors: FloatArray, low: float) -> Iterator[Band]:
    """Pairs (i, j), j < i, with similarity >= low, one square tile of the lower triangle at
    a time: square tiles keep the matrix products efficient and the tile in cache."""
    count = len(vectors)
    side = max(1, math.isqrt(BLOCK_ELEMENTS))
    for row in range(0, count, side):
        rows = vectors[row : row + side]
        for column in range(0, row + 1, side):
            similarity = rows @ vectors[column : column + side].T
            hit = similarity >= low
            if column == row:  # each pair once: only left of the diagonal
                hit &= np.tri(len(rows), k=-1, dtype=bool)
            first, second = np.nonzero(hit)
            yield first + row, second + column, similarity[first, second]


def _pairs_with_new(old: FloatArray, added: FloatArray, low: float) -> Iterator[Band]:
    """Pairs (i, j), j < i, i a new face (index len(old) + k), with similarity >= low, in
    blocks of new faces against the old ones and the new ones before them."""
    first_new, count = len(old), len(added)
    rows = max(1, BLOCK_ELEMENTS // max(1, first_new + count))
    for start in range(0, count, rows):
        stop = min(count, start + rows)
        block = added[start:stop]
        if first_new:
            similarity = block @ old.T
            first, second = np.nonzero(similarity >= low)
            yield first + (first_new + start), second, similarity[first, second]
        similarity = block @ added[:stop].T
        hit = similarity >= low
        hit[:, start:] &= np.tri(stop - start, k=-1, dtype=bool)
        first, second = np.nonzero(hit)
        yield first + (first_new + start), second + first_new, similarity[first, second]


def _changed_regions(
    old: FloatArray,
    labels: IndexArray,
    new_count: int,
    threshold: float,
    joined: IndexArray,
    cannot_link: IndexArray,
) -> list[tuple[IndexArray, bool]]:
    """The faces whose groups can change, as regions that each hold whole components of the
    full similarity-and-must-link graph: (faces ascending, whether a cannot-link lies inside).

    Nodes are the existing groups that an edge or constraint names and the new faces. Joined
    pairs (strong pairs with a new face, must-links) unite nodes; a component is a region to
    work out when it holds a new face, two existing groups, or a cannot-link pair. Such a
    region is then extended to every existing group that has a strong pair with one of its
    groups: only groups with a cannot-link between them can have one (a full grouping would
    have joined them otherwise), so only those are tested, on their own faces."""
    first_new = len(labels)
    ends = np.concatenate((joined.reshape(-1), cannot_link.reshape(-1)))
    touched = np.unique(labels[ends[ends < first_new]])
    groups = len(touched)

    def node(faces: IndexArray) -> IndexArray:
        out = faces - first_new + groups
        is_old = faces < first_new
        out[is_old] = np.searchsorted(touched, labels[faces[is_old]])
        return out

    parent = np.arange(groups + new_count, dtype=np.int64)
    _link(parent, node(joined[:, 0]), node(joined[:, 1]))
    cannot_a, cannot_b = node(cannot_link[:, 0]), node(cannot_link[:, 1])
    seeds = np.zeros(len(parent), dtype=bool)
    seeds[groups:] = True
    seeds[:groups] = np.bincount(parent[:groups], minlength=len(parent))[parent[:groups]] > 1
    seeds[cannot_a[parent[cannot_a] == parent[cannot_b]]] = True
    active = _spread(parent, seeds)

    between_groups = (cannot_a < groups) & (cannot_b < groups) & (cannot_a != cannot_b)
    candidates = np.unique(
        np.sort(np.stack((cannot_a, cannot_b), axis=1)[between_groups], axis=1), axis=0
    ).reshape(-1, 2)
    untested = np.ones(len(candidates), dtype=bool)
    members = _Members(labels)
    while True:
        root_a, root_b = parent[candidates[:, 0]], parent[candidates[:, 1]]
        due = untested & (root_a != root_b) & (active[candidates[:, 0]] | active[candidates[:, 1]])
        if not due.any():
            break
        untested &= ~due
        linked = [
            k
            for k in np.flatnonzero(due).tolist()
            if _any_strong(
                old,
                members.of(touched[candidates[k, 0]]),
                members.of(touched[candidates[k, 1]]),
                threshold,
            )
        ]
        _link(parent, candidates[linked, 0], candidates[linked, 1])
        active = _spread(parent, active)

    active_groups = np.flatnonzero(active[:groups])
    old_faces = np.flatnonzero(np.isin(labels, touched[active_groups]))
    faces = np.concatenate((old_faces, first_new + np.arange(new_count, dtype=np.int64)))
    region_of = np.concatenate(
        (parent[np.searchsorted(touched, labels[old_faces])], parent[groups:])
    )
    order = np.lexsort((faces, region_of))
    faces, region_of = faces[order], region_of[order]
    inside = active[cannot_a] & (parent[cannot_a] == parent[cannot_b])
    holding = set(parent[cannot_a[inside]].tolist())
    bounds = np.flatnonzero(np.diff(region_of)) + 1
    return [
        (part, int(region_of[start]) in holding)
        for part, start in zip(np.split(faces, bounds), [0, *bounds.tolist()], strict=True)
        if len(part)
    ]


def _spread(parent: IndexArray, marked: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Marks every node whose component holds a marked node (parent compressed)."""
    component = np.zeros(len(parent), dtype=bool)
    component[parent[marked]] = True
    spread: npt.NDArray[np.bool_] = component[parent]
    return spread


class _Members:
    """The faces of each label, sorted once on first use."""

    def __init__(self, labels: IndexArray) -> None:
        self._labels = labels
        self._order: IndexArray | None = None

    def of(self, label: int) -> IndexArray:
        if self._order is None:
            self._order = np.argsort(self._labels, kind="stable")
            self._sorted = self._labels[self._order]
        start = int(np.searchsorted(self._sorted, label, "left"))
        stop = int(np.searchsorted(self._sorted, label, "right"))
        return self._order[start:stop]


def _any_strong(
    vectors: FloatArray, first: IndexArray, second: IndexArray, threshold: float
) -> bool:
    rows = max(1, BLOCK_ELEMENTS // max(1, len(second)))
    columns = vectors[second]
    return any(
        bool((vectors[first[start : start + rows]] @ columns.T >= threshold).any())
        for start in range(0, len(first), rows)
    )


def _keep_labels(out: IndexArray, pieces: list[IndexArray], labels: IndexArray) -> None:
    """Labels the changed groups in `out`: larger groups first (ties: lowest face), each keeps
    the label most of its existing faces had (ties: the smaller) unless taken; the rest get
    new labels above every existing one, in order of their lowest face."""
    first_new = len(labels)
    taken: set[int] = set()
    unlabelled: list[IndexArray] = []
    for piece in sorted(pieces, key=lambda p: (-len(p), int(p[0]))):
        values, counts = np.unique(labels[piece[piece < first_new]], return_counts=True)
        kept = next(
            (v for v in values[np.lexsort((values, -counts))].tolist() if v not in taken), None
        )
        if kept is None:
            unlabelled.append(piece)
            continue
        taken.add(kept)
        out[piece] = kept
    fresh = int(labels.max()) + 1 if first_new else 0
    for offset, piece in enumerate(sorted(unlabelled, key=lambda p: int(p[0]))):
        out[piece] = fresh + offset


def _refuse_contradictions(must_link: IndexArray, cannot_link: IndexArray) -> None:
    nodes = np.unique(must_link)
    if not len(nodes) or not len(cannot_link):
        return
    parent = np.arange(len(nodes), dtype=np.int64)
    _link(parent, np.searchsorted(nodes, must_link[:, 0]), np.searchsorted(nodes, must_link[:, 1]))
    named = np.isin(cannot_link, nodes).all(axis=1)
    ends = np.searchsorted(nodes, cannot_link[named])
    clashing = parent[ends[:, 0]] == parent[ends[:, 1]]
    if clashing.any():
        a, b = (int(v) for v in cannot_link[named][np.argmax(clashing)])
        raise ConstraintConflict(f"faces {a} and {b} must not be grouped, but must-links join them")


def _within(members: IndexArray, pairs: IndexArray) -> IndexArray:
    """The pairs with both faces among `members` (ascending), as indices into it."""
    inside = np.isin(pairs, members).all(axis=1)
    local: IndexArray = np.searchsorted(members, pairs[inside]).astype(np.int64).reshape(-1, 2)
    return local


def _as_band(pairs: list[AmbiguousPair], members: IndexArray) -> Band:
    first = np.array([p.first for p in pairs], dtype=np.int64)
    second = np.array([p.second for p in pairs], dtype=np.int64)
    similarity = np.array([p.similarity for p in pairs], dtype=np.float32)
    return members[first], members[second], similarity


def _concatenated(parts: Iterable[Band]) -> Band:
    collected = list(parts)
    if not collected:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (
        np.concatenate([a for a, _, _ in collected]).astype(np.int64),
        np.concatenate([b for _, b, _ in collected]).astype(np.int64),
        np.concatenate([s for _, _, s in collected]).astype(np.float32),
    )


def _replay(
    parent: IndexArray,
    forced: IndexArray,
    vectors: FloatArray,
    members: IndexArray,
    threshold: float,
    low: float,
    cannot_link: IndexArray,
) -> Band:
    """Regroups one component that holds a cannot-link pair: from the must-link groups,
    edges by descending similarity, skipping any whose merge would join a cannot-link pair.
    Returns the component's pairs in the review band."""
    parent[members] = forced[members]
    first, second, similarity = _concatenated(_pairs_above(vectors[members], low))
    first, second = members[first], members[second]
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
