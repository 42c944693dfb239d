"""What a manifesting step should do, decided from the assets alone (no I/O): which assets a
job covers, which need detection, and the assets to derive from one image's detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from shared.manifesting.classes import asset_type_for, canonical_class, free_fraction
from shared.manifesting.ports import Detection
from shared.models.assets import Asset, AssetSource, AssetType, BoundingBox
from shared.settings import ModelSettings

CROP_PADDING = 0.1
"""Crops keep a margin around the box: a face or an edge cut at the border loses detail."""
WHOLE_FRAME = 0.85
"""A detection covering this much of the image is the image itself (a portrait), not a crop."""
NOT_DETECTED = frozenset({AssetType.STYLE})
"""A style reference is about its look, not the objects in it."""


@dataclass(frozen=True)
class Detected:
    """An asset to derive from a source image. Its id is made from the source and its rank,
    so a repeated detection step finds it instead of making another."""

    id: str
    asset_type: AssetType
    name: str
    box: BoundingBox
    image: Image.Image
    source_ref: str
    class_name: str | None = None
    confidence: float | None = None
    is_environment: bool = False


def scope_of(assets: Sequence[Asset], asset_ids: Sequence[str] | None) -> list[Asset]:
    """A whole-manifest job covers every asset (each step skips what is done); a reprocess
    covers the named assets and what was derived from them."""
    if asset_ids is None:
        return list(assets)
    wanted = set(asset_ids)
    return [a for a in assets if a.id in wanted or a.source_asset_id in wanted]


def detection_targets(assets: Sequence[Asset], detector: str) -> list[Asset]:
    targets = [
        a for a in assets
        if a.source is AssetSource.UPLOADED and a.image is not None
        and a.asset_type not in NOT_DETECTED and a.detected_by != detector
    ]  # fmt: skip
    # Stable order: tags of derived assets are issued in it.
    return sorted(targets, key=lambda a: (a.sort_order, a.created_at, a.id))


def _padded(box: BoundingBox, width: int, height: int) -> tuple[int, int, int, int]:
    dx, dy = int(box.width * CROP_PADDING), int(box.height * CROP_PADDING)
    left, top = max(box.x - dx, 0), max(box.y - dy, 0)
    right = min(box.x + box.width + dx, width)
    bottom = min(box.y + box.height + dy, height)
    return left, top, right, bottom


MIN_SCENE_PX = 256
"""A thumbnail-sized picture is no usable scene reference."""


def _is_scene(source: Asset, width: int, height: int, free: float, settings: ModelSettings) -> bool:
    """Whether the source also makes a whole-scene ENVIRONMENT asset (E3): mostly free of
    detections, big enough, and an object-like photo (a thing on its own in a place). Never a
    character photo: a portrait in which the detector found only small things (a tie, a
    cup) or nothing (a close-up it missed) is a person, not a place."""
    return (
        source.asset_type not in (AssetType.ENVIRONMENT, AssetType.CHARACTER)
        and free >= settings.min_free_fraction_for_environment
        and min(width, height) >= MIN_SCENE_PX
    )


def derived_assets(
    source: Asset, image: Image.Image, detections: Sequence[Detection], settings: ModelSettings
) -> list[Detected]:
    width, height = image.size
    kept = [
        d for d in detections
        if d.confidence >= settings.min_detection_confidence
        and min(d.box.width, d.box.height) >= settings.min_crop_px
        and d.box.width * d.box.height < WHOLE_FRAME * width * height
    ]  # fmt: skip
    kept.sort(key=lambda d: (-round(d.confidence, 4), d.box.y, d.box.x))
    derived = []
    for rank, detection in enumerate(kept, start=1):
        crop = image.crop(_padded(detection.box, width, height))
        class_name = canonical_class(detection.class_name)
        derived.append(
            Detected(
                id=f"{source.id}-d{rank:02d}",
                asset_type=asset_type_for(class_name),
                name=f"{class_name} {rank} in {source.name}"[:200],
                box=detection.box,
                image=crop,
                source_ref=f"crop:{detection.box.x},{detection.box.y},"
                f"{detection.box.width},{detection.box.height}",
                class_name=class_name,
                confidence=round(detection.confidence, 4),
            )
        )
    # Every confident detection counts here, whole-frame ones too: a portrait is no scene.
    confident = [d.box for d in detections if d.confidence >= settings.min_detection_confidence]
    free = free_fraction(confident, width, height)
    if _is_scene(source, width, height, free, settings):
        derived.append(
            Detected(
                id=f"{source.id}-scene",
                asset_type=AssetType.ENVIRONMENT,
                name=f"scene of {source.name}"[:200],
                box=BoundingBox(x=0, y=0, width=width, height=height),
                image=image,
                source_ref="scene",
                is_environment=True,
            )
        )
    return derived
