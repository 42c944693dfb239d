"""The production detector: a YOLOv8 / YOLO11 model exported to ONNX by ultralytics.

The export (model_service/export_models.py) has one input `images`, float32 [N, 3, H, W],
RGB in 0..1, letterboxed with grey 114; and one output `output0`, [N, 4 + classes, anchors]:
per anchor cx, cy, w, h in input pixels and one score per class (no objectness). Class names
and the input size come from the metadata ultralytics writes into the file.
"""

from __future__ import annotations

import ast
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from model_service.backends.mapping import COCO_CLASSES, letterbox_into, select_detections
from model_service.backends.onnx_runtime import create_session
from shared.manifesting.ports import Detection

log = logging.getLogger(__name__)

PAD_VALUE = 114
"""Grey of ultralytics' letterbox."""


class OnnxYoloDetector:
    """ObjectDetector over an ultralytics ONNX export (a file path or the model's bytes).

    `name` defaults to the file's stem + "-onnx" (yolo11n.onnx → "yolo11n-onnx"). Models
    exported with a dynamic batch run `batch_size` images per call; a fixed batch of B runs B
    at a time, the last call padded with blank inputs.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        name: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        batch_size: int = 8,
        max_detections: int = 100,
        input_size: int = 640,
    ) -> None:
        if name is None:
            name = "yolo-onnx" if isinstance(model, bytes) else f"{Path(model).stem}-onnx"
        self.name = name
        self.model = model
        self.providers = providers
        self.threads = threads
        self.confidence = confidence
        self.iou_threshold = iou_threshold
        self.batch_size = max(1, batch_size)
        self.max_detections = max_detections
        self.input_hw: tuple[int, int] = (input_size, input_size)
        """Input height and width; replaced by the model's own when it declares them."""
        self.class_names: tuple[str, ...] = ()
        self.metadata: dict[str, str] = {}
        self._session: ort.InferenceSession | None = None
        self._input_name = "images"
        self._input_dtype: type[np.floating[Any]] = np.float32
        self._output_name = "output0"
        self._fixed_batch: int | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            if isinstance(self.model, str | Path) and not Path(self.model).is_file():
                raise FileNotFoundError(
                    f"YOLO ONNX model missing: {self.model} "
                    "(python -m model_service.export_models makes it where weights can be had)"
                )
            session = create_session(self.model, providers=self.providers, threads=self.threads)
            model_input = session.get_inputs()[0]
            outputs = [output.name for output in session.get_outputs()]
            self._input_name = model_input.name
            self._output_name = "output0" if "output0" in outputs else outputs[0]
            self._input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
            self.metadata = dict(session.get_modelmeta().custom_metadata_map)
            batch, _, height, width = model_input.shape
            self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
            if isinstance(height, int) and isinstance(width, int):
                self.input_hw = (height, width)
            elif "imgsz" in self.metadata:
                self.input_hw = _input_size(self.metadata["imgsz"], self.input_hw)
            output_shape = session.get_outputs()[0].shape
            channels = output_shape[1] if len(output_shape) == 3 else None
            self.class_names = _class_names(
                self.metadata.get("names"), channels - 4 if isinstance(channels, int) else None
            )
            self._session = session
            log.info(
                "%s loaded: input %s %dx%d, batch %s, %d classes",
                self.name,
                self._input_name,
                self.input_hw[1],
                self.input_hw[0],
                self._fixed_batch or "dynamic",
                len(self.class_names),
            )

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        self.load()
        step = self._fixed_batch or self.batch_size
        results: list[list[Detection]] = []
        for start in range(0, len(images), step):
            results.extend(self._detect_batch(images[start : start + step]))
        return results

    def _detect_batch(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        assert self._session is not None
        height, width = self.input_hw
        rows = max(len(images), self._fixed_batch or 0)
        # Rows past the images (a fixed batch's last call) stay blank grey.
        canvas = np.full((rows, height, width, 3), PAD_VALUE, dtype=np.uint8)
        placed = [letterbox_into(canvas[i], image, PAD_VALUE) for i, image in enumerate(images)]
        batch = canvas.transpose(0, 3, 1, 2).astype(self._input_dtype)
        batch *= self._input_dtype(1 / 255)
        (output,) = self._session.run([self._output_name], {self._input_name: batch})
        predictions = np.asarray(output, dtype=np.float32)[: len(images)]
        if predictions.ndim != 3:
            raise ValueError(f"{self.name}: expected a 3-d output, got {predictions.shape}")
        # Ultralytics puts channels first ([N, 4 + classes, anchors]); accept anchors first
        # too: there are always far more anchors than channels.
        if predictions.shape[1] < predictions.shape[2]:
            predictions = predictions.transpose(0, 2, 1)
        classes = predictions.shape[2] - 4
        names = (
            self.class_names if len(self.class_names) >= classes else _class_names(None, classes)
        )
        results = []
        for image, box_map, anchors in zip(images, placed, predictions, strict=True):
            class_scores = anchors[:, 4:]
            class_ids = class_scores.argmax(axis=1)
            scores = class_scores[np.arange(len(class_ids)), class_ids]
            keep = scores >= self.confidence
            centre, half = anchors[keep, 0:2], anchors[keep, 2:4] / 2
            results.append(
                select_detections(
                    box_map.to_image(np.concatenate((centre - half, centre + half), axis=1)),
                    scores[keep],
                    class_ids[keep],
                    names,
                    image.width,
                    image.height,
                    confidence=self.confidence,
                    iou_threshold=self.iou_threshold,
                    max_detections=self.max_detections,
                )
            )
        return results


def _class_names(raw: str | None, count: int | None) -> tuple[str, ...]:
    """Names from ultralytics' `names` metadata (the repr of a dict {0: 'person', …}),
    else the COCO names when the model has 80 classes, else class_0, class_1 …"""
    if raw:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            log.warning("unreadable class names in model metadata: %.80s", raw)
        else:
            if isinstance(parsed, dict):
                names = {int(key): str(value) for key, value in parsed.items()}
                return tuple(names.get(i, f"class_{i}") for i in range(max(names) + 1))
            if isinstance(parsed, list | tuple):
                return tuple(str(value) for value in parsed)
    if count is None or count == len(COCO_CLASSES):
        return COCO_CLASSES
    return tuple(f"class_{i}" for i in range(count))


def _input_size(raw: str, default: tuple[int, int]) -> tuple[int, int]:
    """Ultralytics writes imgsz as "[640, 640]" (height, width)."""
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return default
    if isinstance(parsed, int):
        return parsed, parsed
    if isinstance(parsed, list | tuple) and len(parsed) == 2:
        return int(parsed[0]), int(parsed[1])
    return default
