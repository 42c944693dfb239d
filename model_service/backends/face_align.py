"""What both face backends share: 5-point alignment to the ArcFace template, padding of
close-ups, non-maximum suppression, and turning raw detections into `Face`s.

Both embedders (SFace and ArcFace) were trained on 112x112 crops made by one similarity
transform (rotation, uniform scale, translation) that puts the eyes, nose tip and mouth
corners of a face onto fixed template points. Embeddings of crops aligned any other way
drift apart for the same person, so alignment lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from shared.manifesting.ports import Face
from shared.models.assets import BoundingBox

ALIGNED_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # eye on the image's left (the person's right eye)
        [73.5318, 51.5014],  # eye on the image's right
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner on the image's left
        [70.7299, 92.2041],  # mouth corner on the image's right
    ],
    dtype=np.float32,
)
"""Where the five landmarks land in a 112x112 crop (insightface's arcface_dst; OpenCV's
FaceRecognizerSF uses the same points for SFace)."""

CLOSE_UP_CANVAS = 2.0
"""A frame-filling face is retried on a canvas this many times the image's size."""
CLOSE_UP_FILL = 0.6
"""A face box this wide or tall, as a share of the image, counts as filling the frame."""
CANVAS_GREY = 127
"""Fill of that canvas: mid grey finds more padded close-ups than black or repeated edges
(measured with YuNet on crops of the sample photos)."""


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB array of a PIL image, whatever its mode."""
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def similarity_transform(landmarks: np.ndarray) -> np.ndarray | None:
    """2x3 matrix taking five (x, y) landmarks onto ARCFACE_TEMPLATE, or None when they are
    degenerate (all on one point). Least median of squares, refined on its inliers: with five
    consistent landmarks that is the least-squares fit insightface and OpenCV align with (the
    same matrices on every face of the sample photos), and one landmark far off (an occluded
    mouth corner) does not drag the other four away from their template points."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    if float(np.ptp(points, axis=0).max()) < 1e-3:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(points, ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        return None
    return np.asarray(matrix, dtype=np.float32)


def align_face(pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The 112x112x3 crop of one face (same channel order as `pixels`), or None when its
    landmarks are degenerate."""
    matrix = similarity_transform(landmarks)
    if matrix is None:
        return None
    return cv2.warpAffine(pixels, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), borderValue=(0, 0, 0))


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


@dataclass(frozen=True)
class RawFaces:
    """Detections of one image in its own pixels, best first: boxes (K, 4) x0 y0 x1 y1,
    scores (K,), landmarks (K, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> RawFaces:
        return RawFaces(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def shifted(self, dx: float, dy: float) -> RawFaces:
        offset = np.array([dx, dy], dtype=np.float32)
        return RawFaces(
            self.boxes + np.tile(offset, 2), self.scores, self.landmarks + offset.reshape(1, 1, 2)
        )


def detect_with_close_up_retry(
    detect: Callable[[np.ndarray], RawFaces], pixels: np.ndarray
) -> RawFaces:
    """`detect` on the image, and again on a grey canvas CLOSE_UP_CANVAS times larger with
    the image in the middle when that found nothing or a face that fills the frame:
    detectors learnt faces with some context around them, and a face that fills the frame
    (a portrait crop, a person crop cut at the chin) has none; it is missed, or found with a
    low score and misplaced landmarks. The run whose best face scores higher wins. Boxes
    come back in the image's pixels."""
    found = detect(pixels)
    height, width = pixels.shape[:2]
    if len(found):
        sides = found.boxes[:, 2:] - found.boxes[:, :2]
        if not (sides >= CLOSE_UP_FILL * np.array([width, height])).any():
            return found
    canvas_h, canvas_w = round(height * CLOSE_UP_CANVAS), round(width * CLOSE_UP_CANVAS)
    top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
    canvas = np.full((canvas_h, canvas_w, 3), CANVAS_GREY, dtype=np.uint8)
    canvas[top : top + height, left : left + width] = pixels
    padded = detect(canvas).shifted(-left, -top)
    if len(found) and (not len(padded) or found.scores.max() >= padded.scores.max()):
        return found
    return padded


def aligned_crops(
    pixels: Sequence[np.ndarray], detections: Sequence[RawFaces]
) -> tuple[np.ndarray, list[list[int]]]:
    """All faces of all images as one (N, 112, 112, 3) batch, and per image the positions of
    its faces in that batch (-1 for a face whose landmarks could not be aligned)."""
    crops: list[np.ndarray] = []
    where: list[list[int]] = []
    for image, found in zip(pixels, detections, strict=True):
        positions = []
        for landmarks in found.landmarks:
            crop = align_face(image, landmarks)
            if crop is None:
                positions.append(-1)
                continue
            positions.append(len(crops))
            crops.append(crop)
        where.append(positions)
    batch = (
        np.stack(crops) if crops else np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
    )
    return batch, where


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def to_faces(
    found: RawFaces, positions: Sequence[int], embeddings: np.ndarray, width: int, height: int
) -> list[Face]:
    """Faces of one image, best first: boxes clipped to the frame and rounded outwards to
    whole pixels; faces that could not be aligned or lie outside the frame are left out."""
    faces = []
    for box, score, landmarks, position in zip(
        found.boxes, found.scores, found.landmarks, positions, strict=True
    ):
        if position < 0:
            continue
        x0, y0 = (int(np.floor(v)) for v in np.clip(box[:2], 0, [width, height]))
        x1, y1 = (int(np.ceil(v)) for v in np.clip(box[2:], 0, [width, height]))
        if x1 <= x0 or y1 <= y0:
            continue
        faces.append(
            Face(
                box=BoundingBox(x=x0, y=y0, width=x1 - x0, height=y1 - y0),
                confidence=float(score),
                landmarks=tuple((float(x), float(y)) for x, y in landmarks),
                embedding=embeddings[position].copy(),
            )
        )
    faces.sort(key=lambda face: -face.confidence)
    return faces


def analyze_images(
    images: Sequence[Image.Image],
    detect: Callable[[np.ndarray], RawFaces],
    embed: Callable[[np.ndarray], np.ndarray],
) -> list[list[Face]]:
    """The pipeline of both backends: detect per image (with the close-up retry), align
    every face, embed all faces of all images in one call (`embed` batches as its model
    allows: one inference per face would cost more than the whole detection)."""
    pixels = [rgb_pixels(image) for image in images]
    detections = [detect_with_close_up_retry(detect, image) for image in pixels]
    crops, where = aligned_crops(pixels, detections)
    embeddings = l2_normalise(embed(crops)) if len(crops) else np.zeros((0, 0), np.float32)
    return [
        to_faces(found, positions, embeddings, image.shape[1], image.shape[0])
        for image, found, positions in zip(pixels, detections, where, strict=True)
    ]
