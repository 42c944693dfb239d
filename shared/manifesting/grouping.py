"""Face groups on a manifest's assets (E4, E7): the grouping is data (`face_group_id`), the same
value on every asset of one person, with one primary per group.

Every run regroups all faces of the manifest that one model embedded (transitive, so adding a
photo can join two groups), and keeps group ids stable across runs: a group keeps the id most
of its members already had, so an incremental run changes only what it must.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.manifesting.face_groups import AmbiguousPair, group_faces
from shared.models.assets import Asset, BoundingBox


@dataclass(frozen=True)
class GroupAssignment:
    groups: dict[str, str] = field(default_factory=dict)
    """Asset id → group id, for every asset with a face of the model."""
    primaries: set[str] = field(default_factory=set)
    ambiguous_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    """Pairs of assets in different groups that are nearly alike: for a person to review."""

    @property
    def group_count(self) -> int:
        return len(set(self.groups.values()))


def _primary_score(asset: Asset) -> float:
    """Clearer and larger faces make better primaries."""
    box = asset.face_bbox
    area = float(box.width * box.height) if box else 0.0
    return float(asset.face_confidence or 0.0) * float(np.sqrt(area))


def assign_face_groups(
    assets: Sequence[Asset], *, model: str, threshold: float, ambiguous_margin: float
) -> GroupAssignment:
    faces = [a for a in assets if a.face_embedding is not None and a.face_embedding.model == model]
    if not faces:
        return GroupAssignment()
    faces.sort(key=lambda a: a.id)  # the same input order gives the same labels
    embeddings = np.array([a.face_embedding.vector for a in faces if a.face_embedding], np.float32)
    result = group_faces(
        embeddings,
        threshold=threshold,
        ambiguous_margin=ambiguous_margin,
        scores=[_primary_score(a) for a in faces],
        cannot_link=same_photo_strangers(faces),
    )
    members: dict[int, list[Asset]] = {}
    for asset, label in zip(faces, result.labels.tolist(), strict=True):
        members.setdefault(int(label), []).append(asset)
    ids = _stable_ids(members)
    groups = {a.id: ids[label] for label, group in members.items() for a in group}
    primaries = {faces[index].id for index in result.primaries.values()}
    return GroupAssignment(groups, primaries, _named(result.ambiguous, faces))


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


def _stable_ids(members: dict[int, list[Asset]]) -> dict[int, str]:
    """Each group keeps the id most of its members had (largest groups choose first); a group
    with none, or whose id was taken by a larger part of a split group, gets a new one made
    from its first member, which is the same on every run."""
    ids: dict[int, str] = {}
    taken: set[str] = set()
    for label, group in sorted(members.items(), key=lambda item: -len(item[1])):
        had = Counter(a.face_group_id for a in group if a.face_group_id)
        keep = next(
            (
                gid
                for gid, _ in sorted(had.items(), key=lambda x: (-x[1], x[0]))
                if gid not in taken
            ),
            None,
        )
        ids[label] = keep or f"face-{min(a.id for a in group)}"
        taken.add(ids[label])
    return ids


def _named(pairs: list[AmbiguousPair], faces: list[Asset]) -> list[tuple[str, str, float]]:
    return [(faces[p.first].id, faces[p.second].id, round(p.similarity, 4)) for p in pairs]
