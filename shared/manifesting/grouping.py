"""Face groups on a manifest's assets (E4, E7): the grouping is data (`face_group_id`), the same
value on every asset of one person, with one primary per group.

Two ways to group, with the same result on the same data:
- assign_face_groups regroups every face of the manifest that one model embedded (transitive,
  so adding a photo can join two groups);
- assign_new_faces matches only the faces without a group against the grouped ones
  (face_groups.match_faces), which is exact as long as the grouped faces, their embeddings,
  the threshold and the links are as they were when their groups were made, links added
  since excepted.
Both keep group ids stable: a group keeps the id most of its members already had, so a run
changes only what it must.

Links are a person's word on two assets: "same" (must-link) or "different" (cannot-link).
They override similarity both ways, and "same" also overrides the rule that two people
cropped from one photo are different people. link_contradiction checks a new link against
the others before it is stored.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.manifesting.face_groups import AmbiguousPair, FaceGroups, group_faces, match_faces
from shared.models.assets import Asset, BoundingBox
from shared.models.face_links import FaceGroupingState
from shared.models.manifests import Manifest


class FaceLink(Protocol):
    """A person's word on the faces of two assets; `kind` is "same" or "different"."""

    @property
    def asset_a(self) -> str: ...

    @property
    def asset_b(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class GroupAssignment:
    groups: dict[str, str] = field(default_factory=dict)
    """Asset id → group id, for every asset with a face of the model."""
    primaries: set[str] = field(default_factory=set)
    ambiguous_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    """Pairs of assets in different groups that are nearly alike: for a person to review.
    (asset_a < asset_b), most alike first. assign_new_faces reports those with a new face
    and those among the faces it regrouped; earlier pairs still in different groups and not
    linked since remain valid."""
    regrouped: set[str] = field(default_factory=set)
    """Assets whose group was worked out (assign_face_groups: all); the others kept theirs."""

    @property
    def group_count(self) -> int:
        return len(set(self.groups.values()))


def _primary_score(asset: Asset) -> float:
    """Clearer and larger faces make better primaries."""
    box = asset.face_bbox
    area = float(box.width * box.height) if box else 0.0
    return float(asset.face_confidence or 0.0) * float(np.sqrt(area))


def _faces(assets: Sequence[Asset], model: str) -> list[Asset]:
    faces = [a for a in assets if a.face_embedding is not None and a.face_embedding.model == model]
    faces.sort(key=lambda a: a.id)  # the same input order gives the same labels
    return faces


def _embeddings(faces: Sequence[Asset]) -> np.ndarray:
    return np.array([a.face_embedding.vector for a in faces if a.face_embedding], np.float32)


def assign_face_groups(
    assets: Sequence[Asset],
    *,
    model: str,
    threshold: float,
    ambiguous_margin: float,
    links: Iterable[FaceLink] = (),
) -> GroupAssignment:
    """Regroups every face of `model` among `assets`, honouring `links`. Raises
    face_groups.ConstraintConflict when "same" links join a "different" pair."""
    faces = _faces(assets, model)
    if not faces:
        return GroupAssignment()
    must, cannot = _constraints(faces, links)
    result = group_faces(
        _embeddings(faces),
        threshold=threshold,
        ambiguous_margin=ambiguous_margin,
        scores=[_primary_score(a) for a in faces],
        must_link=must,
        cannot_link=cannot,
    )
    return _assignment(faces, result, kept={})


def assign_new_faces(
    assets: Sequence[Asset],
    *,
    model: str,
    threshold: float,
    ambiguous_margin: float,
    links: Iterable[FaceLink] = (),
) -> GroupAssignment:
    """Places the faces of `model` that have no group yet among those that have one,
    comparing only pairs with a new face; links added since the last grouping (with or without
    new faces) are applied too. Same groups, ids, primaries and review pairs as
    assign_face_groups on the same assets and links, provided the grouped faces are as
    their last grouping left them (see the module's docstring)."""
    faces = _faces(assets, model)
    old = [a for a in faces if a.face_group_id]
    if not old:
        return assign_face_groups(
            assets, model=model, threshold=threshold, ambiguous_margin=ambiguous_margin, links=links
        )
    new = [a for a in faces if not a.face_group_id]
    ordered = old + new
    code = {gid: k for k, gid in enumerate(sorted({str(a.face_group_id) for a in old}))}
    must, cannot = _constraints(ordered, links)
    existing = _embeddings(old)
    result = match_faces(
        existing,
        [code[str(a.face_group_id)] for a in old],
        _embeddings(new).reshape(-1, existing.shape[1]),
        threshold=threshold,
        ambiguous_margin=ambiguous_margin,
        existing_scores=[_primary_score(a) for a in old],
        new_scores=[_primary_score(a) for a in new],
        must_link=must,
        cannot_link=cannot,
    )
    changed = set(result.regrouped.tolist())
    kept = {a.id: str(a.face_group_id) for i, a in enumerate(old) if i not in changed}
    return _assignment(ordered, result, kept)


@dataclass(frozen=True)
class ManifestGrouping:
    assignment: GroupAssignment
    incremental: bool
    """Only the new faces were matched (the last grouping still held)."""
    digest: str
    """The state the assignment leaves: the next run's `last_digest`."""


def group_manifest_faces(
    assets: Sequence[Asset],
    *,
    model: str,
    threshold: float,
    ambiguous_margin: float,
    links: Sequence[FaceLink],
    last_digest: str | None,
) -> ManifestGrouping:
    """Matches only the new faces when the grouped ones, the settings and the links are what
    the last grouping left (`last_digest`), and regroups every face otherwise: a face removed
    or embedded again may split a group, and a link removed may too."""

    def digest(groups: Mapping[str, str] | None = None) -> str:
        return grouping_digest(
            assets, model=model, threshold=threshold, ambiguous_margin=ambiguous_margin,
            links=links, groups=groups,
        )  # fmt: skip

    incremental = last_digest is not None and last_digest == digest()
    assign = assign_new_faces if incremental else assign_face_groups
    assignment = assign(
        assets, model=model, threshold=threshold, ambiguous_margin=ambiguous_margin, links=links
    )
    return ManifestGrouping(assignment, incremental, digest(assignment.groups))


def carried_grouping(
    source: Manifest, assets: Sequence[Asset], copies: Sequence[Asset], links: Sequence[FaceLink]
) -> FaceGroupingState | None:
    """The grouping state of a copy of `source` (its `assets` as `copies`, with `links`): the
    copy's groups hold as far as the source's do, so the copy's first run matches only new
    faces. None when the source's groups were stale (that run then regroups every face)."""
    state = source.face_grouping
    if state is None:
        return None

    def digest(faces: Sequence[Asset], with_links: Sequence[FaceLink]) -> str:
        return grouping_digest(
            faces, model=state.model, threshold=state.threshold,
            ambiguous_margin=state.ambiguous_margin, links=with_links,
        )  # fmt: skip

    if digest(assets, source.face_links) != state.digest:
        return None
    return state.model_copy(update={"digest": digest(copies, links)})


def grouping_digest(
    assets: Sequence[Asset],
    *,
    model: str,
    threshold: float,
    ambiguous_margin: float,
    links: Iterable[FaceLink],
    groups: Mapping[str, str] | None = None,
) -> str:
    """A digest of the grouped faces of `model` (id, group, embedding), the settings and the
    links; `groups` gives the groups to assume instead of those the assets hold."""
    digest = hashlib.sha256(f"{model}|{threshold!r}|{ambiguous_margin!r}".encode())
    for asset in _faces(assets, model):
        group = asset.face_group_id if groups is None else groups.get(asset.id)
        if group and asset.face_embedding is not None:
            digest.update(f"|{asset.id}={group}:".encode())
            digest.update(np.asarray(asset.face_embedding.vector, np.float32).tobytes())
    for a, b, kind in sorted((*sorted((x.asset_a, x.asset_b)), str(x.kind)) for x in links):
        digest.update(f"|{a}~{b}:{kind}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class GroupEdit:
    asset_id: str
    group_id: str | None
    primary: bool


def group_edits(assets: Sequence[Asset], result: GroupAssignment) -> list[GroupEdit]:
    """The assets whose group or primary mark the assignment changes, and nothing else."""
    edits = []
    for asset in assets:
        if asset.id in result.groups:
            group, primary = result.groups[asset.id], asset.id in result.primaries
            if (asset.face_group_id, asset.is_face_group_primary) != (group, primary):
                edits.append(GroupEdit(asset.id, group, primary))
    return edits


def _assignment(faces: list[Asset], result: FaceGroups, kept: dict[str, str]) -> GroupAssignment:
    """Group ids: `kept` for faces whose group did not change, _stable_ids for the rest (the
    groups that changed are whole, so they compete for ids only among themselves)."""
    members: dict[int, list[Asset]] = {}
    for index in result.regrouped.tolist():
        members.setdefault(int(result.labels[index]), []).append(faces[index])
    ids = _stable_ids(members, {str(a.face_group_id) for a in faces if a.face_group_id})
    groups = dict(kept)
    groups.update({a.id: ids[label] for label, group in members.items() for a in group})
    primaries = {faces[index].id for index in result.primaries.values()}
    regrouped = {faces[index].id for index in result.regrouped.tolist()}
    return GroupAssignment(groups, primaries, _named(result.ambiguous, faces), regrouped)


def _constraints(
    faces: Sequence[Asset], links: Iterable[FaceLink]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Must-link and cannot-link index pairs: the links between faces present, and the
    same-photo strangers except where "same" links join them (a person's word wins over the
    rule, which a detector's split crops of one person can fool)."""
    index = {a.id: i for i, a in enumerate(faces)}
    must: list[tuple[int, int]] = []
    cannot: list[tuple[int, int]] = []
    for link in links:
        if link.kind not in ("same", "different"):
            raise ValueError(f"a face link is 'same' or 'different', not {link.kind!r}")
        a, b = index.get(link.asset_a), index.get(link.asset_b)
        if a is not None and b is not None and a != b:
            (must if link.kind == "same" else cannot).append((a, b))
    joined = _Components()
    for a, b in must:
        joined.union(a, b)
    cannot += [(a, b) for a, b in same_photo_strangers(faces) if joined.find(a) != joined.find(b)]
    return must, cannot


class _Components:
    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, node: int) -> int:
        parent = self._parent
        while parent.get(node, node) != node:
            node = parent[node] = parent.get(parent[node], parent[node])
        return node

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)


@dataclass(frozen=True)
class LinkContradiction:
    chain: list[str]
    """Assets each linked as the same person as the next, from one end to the other."""
    different: tuple[str, str]
    """The "different" link between the chain's two ends."""

    def __str__(self) -> str:
        a, b = self.different
        return (
            f"{' – '.join(self.chain)} are linked as the same person, "
            f"but {a} and {b} as different people"
        )


def link_contradiction(links: Iterable[FaceLink], new: FaceLink) -> LinkContradiction | None:
    """Whether `new` contradicts the stored `links`: a "same" chain would join the two ends
    of a "different" link. Returns the shortest such chain, or None. Groups never contradict
    a link (links override similarity), and a "same" link overrides the same-photo rule, so
    only links are checked."""
    if new.kind not in ("same", "different"):
        raise ValueError(f"a face link is 'same' or 'different', not {new.kind!r}")
    same: dict[str, set[str]] = {}
    different: list[tuple[str, str]] = []
    for link in links:
        if link.kind == "same":
            same.setdefault(link.asset_a, set()).add(link.asset_b)
            same.setdefault(link.asset_b, set()).add(link.asset_a)
        elif link.kind == "different":
            different.append((link.asset_a, link.asset_b))
    a, b = new.asset_a, new.asset_b
    if new.kind == "different":
        path = _chain(same, a, b)
        return LinkContradiction(path, (a, b)) if path else None
    before_a, before_b = _reach(same, a), _reach(same, b)
    if b in before_a:
        return None  # already the same person: nothing new is joined
    same.setdefault(a, set()).add(b)
    same.setdefault(b, set()).add(a)
    found = [
        LinkContradiction(_chain(same, x, y), (x, y))
        for x, y in different
        if (x in before_a and y in before_b) or (x in before_b and y in before_a)
    ]
    return min(found, key=lambda c: (len(c.chain), c.chain), default=None)


def _reach(same: dict[str, set[str]], start: str) -> set[str]:
    seen, queue = {start}, deque([start])
    while queue:
        for neighbour in same.get(queue.popleft(), ()):
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return seen


def _chain(same: dict[str, set[str]], start: str, end: str) -> list[str]:
    """The shortest path of "same" links from start to end ([start] when they are one
    asset), or [] when there is none."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == end:
            path = [node]
            while (before := previous[path[-1]]) is not None:
                path.append(before)
            return path[::-1]
        for neighbour in sorted(same.get(node, ())):
            if neighbour not in previous:
                previous[neighbour] = node
                queue.append(neighbour)
    return []


SEPARATE_PEOPLE_IOU = 0.3
"""Two person crops of one photo overlapping less than this show two people."""


def _iou(a: BoundingBox, b: BoundingBox) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1 = min(a.x + a.width, b.x + b.width)
    y1 = min(a.y + a.height, b.y + b.height)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0


def same_photo_strangers(faces: Sequence[Asset]) -> list[tuple[int, int]]:
    """Cannot-link pairs: two crops of one photo in different places are different people,
    however alike their faces look. Without this, chains of near matches across many photos
    join everyone (single linkage); with it, a chain can never pass through two people of one
    photo."""
    by_source: dict[str, list[int]] = {}
    for index, asset in enumerate(faces):
        if asset.source_asset_id and asset.crop_bbox is not None:
            by_source.setdefault(asset.source_asset_id, []).append(index)
    pairs = []
    for members in by_source.values():
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                box_a, box_b = faces[first].crop_bbox, faces[second].crop_bbox
                if box_a and box_b and _iou(box_a, box_b) < SEPARATE_PEOPLE_IOU:
                    pairs.append((first, second))
    return pairs


def _stable_ids(members: dict[int, list[Asset]], in_use: set[str]) -> dict[int, str]:
    """Each group keeps the id most of its members had (largest groups choose first, ties to
    the lowest member id); a group with none, or whose id was taken by a larger part of a
    split group, gets a new one made from its first member, which is the same on every run.
    `in_use` holds every id the manifest's faces had: a new id never reuses one (a group
    named after a face that later moved would otherwise share its id with that face's
    new group)."""
    ids: dict[int, str] = {}
    taken: set[str] = set()
    by_size = sorted(members.items(), key=lambda item: (-len(item[1]), min(a.id for a in item[1])))
    for label, group in by_size:
        had = Counter(a.face_group_id for a in group if a.face_group_id)
        keep = next(
            (
                gid
                for gid, _ in sorted(had.items(), key=lambda x: (-x[1], x[0]))
                if gid not in taken
            ),
            None,
        )
        if keep is None:
            base = f"face-{min(a.id for a in group)}"
            keep = next(
                name
                for name in itertools.chain([base], (f"{base}-{n}" for n in itertools.count(2)))
                if name not in in_use and name not in taken
            )
        ids[label] = keep
        taken.add(keep)
    return ids


def _named(pairs: list[AmbiguousPair], faces: list[Asset]) -> list[tuple[str, str, float]]:
    """Each pair as (smaller id, larger id), most alike first, ties in id order: the same list
    whichever order the faces were passed in."""
    named: list[tuple[str, str, float]] = []
    for p in pairs:
        a, b = sorted((faces[p.first].id, faces[p.second].id))
        named.append((a, b, p.similarity))
    named.sort(key=lambda n: (-n[2], n[0], n[1]))
    return [(a, b, round(s, 4)) for a, b, s in named]
