"""What the manifesting engine needs from models, as small Protocols.

Implementations live in model_service/backends (ONNX sessions, OpenCV, google-genai); tests
swap in the real thing where it can run here and small stand-ins where it cannot. Every
implementation has an idempotent `load()` (so a service loads once, lazily or at start-up)
and a `name` that is recorded on what it produced: results of different models are never
mixed (face embeddings above all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from shared.models.assets import AssetType, BoundingBox


@dataclass(frozen=True)
class Detection:
    class_name: str
    """COCO class name as the model reports it: person, bus, chair …"""
    confidence: float
    box: BoundingBox
    """Pixel box in the image that was passed in, clipped to it."""


class ObjectDetector(Protocol):
    name: str
    """Model and version, e.g. "yolov3-tiny-darknet" or "yolo11n-onnx"."""

    def load(self) -> None: ...

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Detections per image (RGB), best first, after non-maximum suppression. Batches
        internally where the model allows."""
        ...


@dataclass(frozen=True)
class Face:
    box: BoundingBox
    confidence: float
    landmarks: tuple[tuple[float, float], ...]
    """Five points: right eye, left eye, nose tip, right and left mouth corners (pixels)."""
    embedding: np.ndarray = field(compare=False)
    """L2-normalised float32 vector; compare only with embeddings of the same model."""


class FaceAnalyzer(Protocol):
    name: str
    """The embedding model and version, e.g. "sface-2021dec" or "arcface-w600k-r50"."""
    detector_name: str
    same_person_threshold: float
    """Cosine similarity at or above which two faces of this model are the same person."""
    ambiguous_margin: float
    """Similarities within this margin below the threshold are flagged for review."""

    def load(self) -> None: ...

    def analyze(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """Faces per image (RGB): detection, alignment and embedding, best first."""
        ...


class Description(BaseModel):
    """Structured output of a reverse prompt (also the Gemini response schema)."""

    reverse_prompt: str = Field(description="A prompt that would regenerate this subject")
    visual_description: str = Field(description="What is visible: appearance, colours, details")
    quality_score: float = Field(ge=0, le=10, description="How usable as a reference, 0-10")
    suggested_name: str = Field(max_length=80, description="A short name for the asset")


@dataclass(frozen=True)
class DescriptionResult:
    description: Description
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    is_local: bool = False
    """True for the offline describer, which derives its text from what it measured."""


@dataclass(frozen=True)
class DescribeRequest:
    image: Image.Image
    asset_type: AssetType
    hints: dict[str, str] = field(default_factory=dict)
    """What is already known (detected class, face found, user's name for it)."""


class Describer(Protocol):
    name: str

    async def describe(self, request: DescribeRequest) -> DescriptionResult:
        """One reverse prompt. Implementations retry transient failures themselves and raise
        DescriberError when they give up or the answer is unusable."""
        ...


class DescriberError(Exception):
    """A reverse prompt could not be made; the asset keeps no description and says why."""
