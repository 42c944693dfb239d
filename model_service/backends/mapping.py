"""From images to model inputs, from raw boxes to Detections, from Detections to assets (E3).

Both YOLO backends begin and end the same way (letterbox in; back to image pixels, clip,
class-wise non-maximum suppression, best first out), so those steps live here once. The
manifesting engine then maps each class to an asset type and measures how much of the frame
the detections leave free for an ENVIRONMENT asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from shared.manifesting.classes import (  # noqa: F401  (re-exported for the backends)
    DARKNET_SPELLINGS,
    PROP_CLASSES,
    VEHICLE_CLASSES,
    asset_type_for,
    canonical_class,
    free_fraction,
)
from shared.manifesting.ports import Detection
from shared.models.assets import BoundingBox

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip
"""The 80 COCO classes in model index order, spelled as ultralytics spells them."""


@dataclass(frozen=True)
class Letterbox:
    """Where an image went inside a model's input: its scale per axis and the padding."""

    scale_x: float
    scale_y: float
    left: int
    top: int

    def to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes in input pixels back to the original image's pixels."""
        offset = np.array([self.left, self.top, self.left, self.top], dtype=np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return (np.asarray(boxes_xyxy, dtype=np.float32) - offset) / scale


def letterbox_into(canvas: np.ndarray, image: Image.Image, pad_value: int) -> Letterbox:
    """Resize `image` to fit the HxWx3 uint8 `canvas` keeping its aspect ratio, centre it,
    pad the rest with `pad_value`. YOLO models were trained on such inputs: a plain resize
    squashes people and cars out of the shapes they learnt (it costs YOLOv3-tiny the bus
    and most of its confidence in the sample photos)."""
    out_h, out_w = canvas.shape[:2]
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    height, width = pixels.shape[:2]
    gain = min(out_h / height, out_w / width)
    new_w = min(out_w, max(1, round(width * gain)))
    new_h = min(out_h, max(1, round(height * gain)))
    # Same split of the padding as ultralytics' LetterBox, so exported models see what
    # they saw in training and validation.
    left = round((out_w - new_w) / 2 - 0.1)
    top = round((out_h - new_h) / 2 - 0.1)
    canvas[...] = pad_value
    resized = (
        pixels
        if (new_w, new_h) == (width, height)
        else cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    canvas[top : top + new_h, left : left + new_w] = resized
    return Letterbox(new_w / width, new_h / height, left, top)


def select_detections(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    class_names: Sequence[str],
    width: int,
    height: int,
    *,
    confidence: float,
    iou_threshold: float,
    max_detections: int,
) -> list[Detection]:
    """Detections for one image from candidate boxes already in its pixel coordinates:
    clipped to the frame, below-threshold and empty boxes dropped, non-maximum suppression
    within each class (a person may overlap a bicycle), best first."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    # Whole pixels, rounded outwards so a thin object keeps at least one pixel.
    pixels = np.concatenate((np.floor(boxes[:, :2]), np.ceil(boxes[:, 2:])), axis=1)
    keep = (scores >= confidence) & (pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])
    boxes, pixels, scores, class_ids = boxes[keep], pixels[keep], scores[keep], class_ids[keep]
    if not len(scores):
        return []
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1)
    # OpenCV's stubs name Python sequences, but it takes the arrays as they are: no copies.
    nms: Any = cv2.dnn.NMSBoxesBatched
    kept = np.asarray(
        nms(xywh, scores, class_ids, confidence, iou_threshold), dtype=np.int64
    ).reshape(-1)
    kept = kept[np.argsort(-scores[kept], kind="stable")][:max_detections]
    detections = []
    for i in kept:
        x0, y0, x1, y1 = (int(v) for v in pixels[i])
        class_id = int(class_ids[i])
        name = class_names[class_id] if class_id < len(class_names) else f"class_{class_id}"
        detections.append(
            Detection(
                class_name=name,
                confidence=float(scores[i]),
                box=BoundingBox(x=x0, y=y0, width=x1 - x0, height=y1 - y0),
            )
        )
    return detections
