"""What both ONNX face analyzers share: a detector and an embedder session, opened once from
files in one folder, and analysis as detect → align → one batched embedding call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort
from PIL import Image

from model_service.backends.face_align import RawFaces, analyze_images
from shared.manifesting.ports import Face


class OnnxFaceAnalyzer:
    missing_hint: ClassVar[str] = ""
    """What puts the model files in place, said when one is missing."""

    def __init__(
        self,
        model_dir: str | Path,
        detector_file: str,
        embedder_file: str,
        *,
        providers: Sequence[str] | None,
        threads: int | None,
        score_threshold: float,
        nms_threshold: float,
        batch_size: int,
        max_faces: int,
    ) -> None:
        self.detector_path = Path(model_dir) / detector_file
        self.embedder_path = Path(model_dir) / embedder_file
        self.providers = providers
        self.threads = threads
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.batch_size = max(1, batch_size)
        self.max_faces = max_faces
        self._detector: ort.InferenceSession | None = None
        self._embedder: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether both model files are where this analyzer looks for them."""
        return self.detector_path.is_file() and self.embedder_path.is_file()

    def load(self) -> None:
        """Opens both sessions once; concurrent first calls wait for the one that opens them."""
        with self._lock:
            if self._detector is not None and self._embedder is not None:
                return
            for path in (self.detector_path, self.embedder_path):
                if not path.is_file():
                    raise FileNotFoundError(f"face model missing: {path} ({self.missing_hint})")
            self._detector, self._embedder = self._open_sessions()

    def _open_sessions(self) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        raise NotImplementedError

    def analyze(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        self.load()
        return analyze_images(images, self.detect, self.embed)

    def detect(self, pixels: np.ndarray) -> RawFaces:
        raise NotImplementedError

    def embed(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError
