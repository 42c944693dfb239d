"""From detector classes to asset types (E3), and how much of a frame detections leave free."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.manifesting.ports import Detection
from shared.models.assets import AssetType, BoundingBox

DARKNET_SPELLINGS: dict[str, str] = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}
"""Darknet's coco.names keeps the older VOC-style names for six of the same classes."""

VEHICLE_CLASSES = frozenset(
    {"bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"}
)
PROP_CLASSES = frozenset(
    {"chair", "couch", "bed", "dining table", "toilet", "bench", "potted plant"}
)
"""Furniture: things a scene is furnished with rather than objects a character handles."""


def canonical_class(class_name: str) -> str:
    """One spelling per COCO class, whichever model reported it."""
    name = class_name.strip().lower()
    return DARKNET_SPELLINGS.get(name, name)


def asset_type_for(class_name: str) -> AssetType:
    name = canonical_class(class_name)
    if name == "person":
        return AssetType.CHARACTER
    if name in VEHICLE_CLASSES:
        return AssetType.VEHICLE
    if name in PROP_CLASSES:
        return AssetType.PROP
    return AssetType.OBJECT


def free_fraction(detections: Sequence[Detection | BoundingBox], width: int, height: int) -> float:
    """Share of the frame (0..1) that no detection box covers, exactly (detections or their
    boxes: an asset's crop_bbox serves as well).

    The box edges cut the frame into a grid of at most (2n+1)² cells, each either wholly
    covered or wholly free, so the union area is a sum over cells, whatever the image size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame must have a positive size, not {width}x{height}")
    if not detections:
        return 1.0
    rects = [d.box if isinstance(d, Detection) else d for d in detections]
    boxes = np.array([(b.x, b.y, b.x + b.width, b.y + b.height) for b in rects], np.float64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    xs = np.unique(np.concatenate(([0.0, width], boxes[:, 0], boxes[:, 2])))
    ys = np.unique(np.concatenate(([0.0, height], boxes[:, 1], boxes[:, 3])))
    mid_x = (xs[:-1] + xs[1:]) / 2
    mid_y = (ys[:-1] + ys[1:]) / 2
    # in_x[b, i]: column i lies inside box b; a cell is covered when one box holds both.
    in_x = (mid_x >= boxes[:, :1]) & (mid_x < boxes[:, 2:3])
    in_y = (mid_y >= boxes[:, 1:2]) & (mid_y < boxes[:, 3:4])
    covered = (in_x.T.astype(np.int32) @ in_y.astype(np.int32)) > 0
    covered_area = float(np.diff(xs) @ covered @ np.diff(ys))
    return max(0.0, 1.0 - covered_area / (width * height))
