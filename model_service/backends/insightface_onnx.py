"""The production face analyzer: insightface's buffalo_l models (SCRFD-10G detection and
ArcFace R50 trained on WebFace600K) on onnxruntime, with our own pre- and post-processing.

The insightface package is not used: it pulls the CPU onnxruntime beside onnxruntime-gpu
(which hides the CUDA providers), and its model zoo guesses model types from file contents.
The files are fetched where the service image is built; what they expect:
- det_10g.onnx: input [1, 3, H, W] RGB, (x - 127.5) / 128, the image letterboxed at the
  top left of a 640x640 canvas; 9 outputs: scores [A, 1], boxes [A, 4] and keypoints
  [A, 10] for strides 8, 16 and 32, with 2 anchors per cell (A = 2 * H/s * W/s), boxes and
  keypoints as distances from the anchor's cell corner in units of the stride.
- w600k_r50.onnx: input [N, 3, 112, 112] RGB, (x - 127.5) / 127.5, aligned to the ArcFace
  template; output [N, 512].
The buffalo_l weights are licensed for non-commercial research only: a commercial deployment
swaps in its own models behind the same FaceAnalyzer port.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from model_service.backends.face_align import RawFaces, nms
from model_service.backends.face_analyzer import OnnxFaceAnalyzer
from model_service.backends.onnx_runtime import create_session

log = logging.getLogger(__name__)

DETECTOR_FILE = "det_10g.onnx"
EMBEDDER_FILE = "w600k_r50.onnx"
DETECTOR_MEAN, DETECTOR_STD = 127.5, 128.0
EMBEDDER_MEAN, EMBEDDER_STD = 127.5, 127.5


class InsightFaceAnalyzer(OnnxFaceAnalyzer):
    """FaceAnalyzer over buffalo_l's det_10g.onnx and w600k_r50.onnx in `model_dir`.

    Thresholds:
    - `same_person_threshold` 0.5: the cosine similarity at which photo libraries that group
      faces with buffalo_l merge two faces (Immich's default maximum distance of 0.5); ArcFace
      R50 puts different people mostly below 0.3 and good photos of one person above 0.6,
      and a transitive grouping pays for every false merge twice, so the bar is high.
    - `ambiguous_margin` 0.1: pairs from 0.4 up to the threshold are flagged for review.
    - `score_threshold` 0.5 and `nms_threshold` 0.4 for detection: insightface's defaults.
    These could not be checked on real photos here (the weights cannot be fetched); the
    offline backend's were.
    """

    missing_hint = "python -m model_service.export_models fetches buffalo_l"
    name = "arcface-w600k-r50"
    detector_name = "scrfd-10g"
    same_person_threshold = 0.5
    ambiguous_margin = 0.1

    def __init__(
        self,
        model_dir: str | Path = ".models/production/buffalo_l",
        *,
        detector_file: str = DETECTOR_FILE,
        embedder_file: str = EMBEDDER_FILE,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        input_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        batch_size: int = 32,
        max_faces: int = 100,
    ) -> None:
        super().__init__(
            model_dir, detector_file, embedder_file, providers=providers, threads=threads,
            score_threshold=score_threshold, nms_threshold=nms_threshold,
            batch_size=batch_size, max_faces=max_faces,
        )  # fmt: skip
        self.input_hw = (input_size, input_size)
        """Detector input height and width; the model's own when it declares them."""
        self._fixed_batch: int | None = None

    def _open_sessions(self) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        detector = create_session(
            self.detector_path, providers=self.providers, threads=self.threads
        )
        embedder = create_session(
            self.embedder_path, providers=self.providers, threads=self.threads
        )
        if len(detector.get_outputs()) != 9:
            raise ValueError(
                f"{self.detector_path.name}: expected SCRFD's 9 outputs (scores, boxes and "
                f"keypoints for 3 strides), got {len(detector.get_outputs())}"
            )
        _, _, height, width = detector.get_inputs()[0].shape
        if isinstance(height, int) and isinstance(width, int):
            self.input_hw = (height, width)
        batch = embedder.get_inputs()[0].shape[0]
        # A model exported with a fixed batch takes exactly that many crops per call.
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        log.info(
            "%s + %s loaded from %s: detector input %dx%d, embedding batch %d",
            self.detector_name,
            self.name,
            self.detector_path.parent,
            self.input_hw[1],
            self.input_hw[0],
            self._fixed_batch or self.batch_size,
        )
        return detector, embedder

    def detect(self, pixels: np.ndarray) -> RawFaces:
        """Faces of one HxWx3 RGB uint8 image, in its pixels, best first."""
        assert self._detector is not None, "load() first"
        in_h, in_w = self.input_hw
        height, width = pixels.shape[:2]
        # insightface's letterbox: keep the aspect ratio, top-left corner, black elsewhere.
        scale = min(in_h / height, in_w / width)
        new_w, new_h = (
            max(1, min(in_w, round(width * scale))),
            max(1, min(in_h, round(height * scale))),
        )
        canvas = np.zeros((in_h, in_w, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = (
            pixels if (new_w, new_h) == (width, height) else cv2.resize(pixels, (new_w, new_h))
        )
        blob = ((canvas - DETECTOR_MEAN) / DETECTOR_STD).transpose(2, 0, 1)[None]
        input_name = self._detector.get_inputs()[0].name
        outputs = self._detector.run(None, {input_name: np.ascontiguousarray(blob)})
        found = decode_scrfd(outputs, in_h, in_w, self.score_threshold)
        keep = nms(found.boxes, found.scores, self.nms_threshold)[: self.max_faces]
        # The scale per axis as applied (rounding), so boxes map back exactly.
        back = np.array([new_w / width, new_h / height], dtype=np.float32)
        return RawFaces(
            found.boxes[keep] / np.tile(back, 2), found.scores[keep], found.landmarks[keep] / back
        )

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512) raw ArcFace features of (N, 112, 112, 3) RGB uint8 aligned crops."""
        assert self._embedder is not None, "load() first"
        if not len(crops):
            return np.zeros((0, 512), dtype=np.float32)
        batch = (crops.astype(np.float32) - EMBEDDER_MEAN) / EMBEDDER_STD
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        input_name = self._embedder.get_inputs()[0].name
        step = self._fixed_batch or self.batch_size
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            rows = len(chunk)
            if self._fixed_batch is not None and rows < step:
                # A fixed-batch export: fill the last call with blank crops, keep only ours.
                blank = np.zeros((step - rows, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate((chunk, blank))
            parts.append(self._embedder.run(None, {input_name: chunk})[0][:rows])
        return np.concatenate(parts).astype(np.float32).reshape(len(batch), -1)


def decode_scrfd(
    outputs: Sequence[np.ndarray], height: int, width: int, score_threshold: float
) -> RawFaces:
    """Candidates above `score_threshold` from SCRFD's 9 outputs, before NMS.

    The outputs are told apart by their shapes, not their names or order (exports differ in
    both): 1, 4 or 10 values per anchor for scores, boxes and keypoints, and within each kind
    more anchors for a finer stride. Anchor centres are the cells' top-left corners, repeated
    once per anchor of the cell, as insightface lays them out."""
    by_kind: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for output in outputs:
        array = np.asarray(output, dtype=np.float32)
        if array.ndim == 3:  # a batched export: [1, A, C]
            array = array[0]
        by_kind.setdefault(array.shape[-1], []).append(array.reshape(-1, array.shape[-1]))
    levels = len(by_kind[1])
    if not levels or len(by_kind[4]) != levels or len(by_kind[10]) != levels:
        shapes = [np.shape(output) for output in outputs]
        raise ValueError(f"not SCRFD outputs with keypoints: {shapes}")
    for kind in by_kind.values():
        kind.sort(key=len, reverse=True)
    boxes, scores, landmarks = [], [], []
    for level in range(levels):
        stride = 8 * 2**level
        rows, cols = height // stride, width // stride
        level_scores = by_kind[1][level].reshape(-1)
        anchors = len(level_scores) // (rows * cols)
        if anchors < 1 or anchors * rows * cols != len(level_scores):
            raise ValueError(
                f"SCRFD stride {stride}: {len(level_scores)} anchors do not fit a "
                f"{cols}x{rows} grid"
            )
        index = np.flatnonzero(level_scores >= score_threshold)
        if not index.size:
            continue
        cell = index // anchors
        centre = np.stack((cell % cols, cell // cols), axis=1).astype(np.float32) * stride
        distance = by_kind[4][level][index] * stride
        boxes.append(np.concatenate((centre - distance[:, :2], centre + distance[:, 2:]), axis=1))
        scores.append(level_scores[index])
        landmarks.append(centre[:, None, :] + by_kind[10][level][index].reshape(-1, 5, 2) * stride)
    if not scores:
        return RawFaces.empty()
    return RawFaces(
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(landmarks).astype(np.float32),
    )
