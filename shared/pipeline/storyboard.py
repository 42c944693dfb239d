"""Manifest-aware storyboards (G3): the model's scenes made to speak the manifest's language.

A storyboard model invents tags (the earlier system's recorded failure: HERO, CHAR_9 …).
Every tag a scene places is matched to the manifest snapshot's own tags, or dropped and
recorded; prompts are rewritten with the assets' reverse prompts; and each scene gets at most
three reference images, chosen for its shot type. The scene keeps its own words; what the
snapshot says of its assets is added when a keyframe prompt is sent (`describe_assets`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.models.assets import Asset, AssetType
from shared.pipeline.ports import SceneDraft, ShotType

MAX_REFERENCES = 3
_TAG = re.compile(r"^([A-Za-z]+)[_\- ]?0*(\d+)$")
PREFERRED_TYPES: dict[ShotType, tuple[AssetType, ...]] = {
    ShotType.CLOSE_UP: (AssetType.CHARACTER,),
    ShotType.MEDIUM: (AssetType.CHARACTER, AssetType.PROP, AssetType.OBJECT, AssetType.VEHICLE),
    ShotType.OVER_THE_SHOULDER: (AssetType.CHARACTER, AssetType.ENVIRONMENT),
    ShotType.WIDE: (AssetType.ENVIRONMENT, AssetType.CHARACTER, AssetType.VEHICLE),
    ShotType.INSERT: (AssetType.OBJECT, AssetType.PROP, AssetType.VEHICLE, AssetType.CHARACTER),
}
"""What a shot shows first; STYLE references are added last, whatever the shot."""


@dataclass(frozen=True)
class PlacedScene:
    draft: SceneDraft
    asset_tags: list[str]
    remapped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    reference_asset_ids: list[str] = field(default_factory=list)
    keyframe_prompt: str = ""
    end_keyframe_prompt: str = ""
    motion_prompt: str = ""


def _normal(tag: str) -> str | None:
    """CHAR_1, char-01, CHAR01 → CHAR_01."""
    match = _TAG.match(tag.strip())
    if match is None:
        return None
    return f"{match[1].upper()}_{int(match[2]):02d}"


def _prefix(tag: str) -> str | None:
    match = _TAG.match(tag.strip())
    return match[1].upper() if match else None


def remap_tag(
    tag: str,
    assets_by_tag: dict[str, Asset],
    taken: set[str],
    aliases: dict[str, str] | None = None,
) -> str | None:
    """The manifest tag an invented tag stands for, or None: exact, then the same tag
    spelled otherwise, then an asset's name (directly, or the name the storyboard's own
    character notes give the tag), then the first unused tag of the same kind."""
    if tag in assets_by_tag:
        return tag
    normal = _normal(tag)
    if normal in assets_by_tag:
        return normal
    by_name = {a.name.casefold(): t for t, a in assets_by_tag.items()}
    for name in (tag.replace("_", " "), (aliases or {}).get(tag, "")):
        named = by_name.get(name.casefold())
        if named is not None:
            return named
    prefix = _prefix(tag)
    same_kind = sorted(t for t in assets_by_tag if t.split("_")[0] == prefix and t not in taken)
    return same_kind[0] if same_kind else None


def describe_assets(tags: Sequence[str], assets_by_tag: Mapping[str, Asset]) -> str:
    """What the snapshot says of a scene's assets, appended to its keyframe prompts when they
    are sent: computed from the tags each time, so a tag edit rebuilds it."""
    notes = []
    for tag in tags:
        asset = assets_by_tag[tag]
        detail = asset.reverse_prompt or asset.visual_description or asset.name
        notes.append(f"{tag} ({asset.name}): {detail}")
    return "" if not notes else "\nAs established — " + "; ".join(notes)


def _substitute(text: str, mapping: dict[str, str]) -> str:
    for invented, real in sorted(mapping.items(), key=lambda item: -len(item[0])):
        if invented != real:
            text = re.sub(rf"\b{re.escape(invented)}\b", real, text)
    return text


def choose_references(
    shot: ShotType, tags: Sequence[str], assets_by_tag: Mapping[str, Asset]
) -> list[str]:
    """At most three assets with images, in the order the shot type wants them; within a
    type the face group's primary and the best quality first."""
    placed = [assets_by_tag[t] for t in tags if assets_by_tag[t].image is not None]
    order = {kind: rank for rank, kind in enumerate(PREFERRED_TYPES[shot])}

    def rank(asset: Asset) -> tuple[int, int, float, int]:
        return (
            order.get(asset.asset_type, len(order) + (asset.asset_type is AssetType.STYLE)),
            0 if asset.is_face_group_primary else 1,
            -(asset.quality_score or 0.0),
            tags.index(asset.manifest_tag),
        )

    return [a.id for a in sorted(placed, key=rank)[:MAX_REFERENCES]]


def place_scene(
    draft: SceneDraft, assets: Sequence[Asset], aliases: dict[str, str] | None = None
) -> PlacedScene:
    """`aliases`: tag → name, from the storyboard's character notes."""
    assets_by_tag = {a.manifest_tag: a for a in assets}
    tags: list[str] = []
    remapped: dict[str, str] = {}
    dropped: list[str] = []
    for tag in draft.asset_tags:
        real = remap_tag(tag, assets_by_tag, set(tags), aliases)
        if real is None:
            dropped.append(tag)
            continue
        if real != tag:
            remapped[tag] = real
        if real not in tags:
            tags.append(real)
    return PlacedScene(
        draft=draft,
        asset_tags=tags,
        remapped=remapped,
        dropped=dropped,
        reference_asset_ids=choose_references(draft.shot_type, tags, assets_by_tag),
        keyframe_prompt=_substitute(draft.keyframe_prompt, remapped),
        end_keyframe_prompt=_substitute(draft.end_keyframe_prompt, remapped),
        motion_prompt=_substitute(draft.motion_prompt, remapped),
    )
