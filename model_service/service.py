"""The model service (BentoML): detection, faces and reverse prompts as typed APIs, and the
manifesting job runner that Cloud Tasks calls.

Serve it with `bentoml serve model_service.service:ModelService`. It declares one GPU; on a
machine without one, onnxruntime falls back to the CPU (the chosen provider is logged).
"""

from __future__ import annotations

import logging

import bentoml
from PIL import Image
from pydantic import BaseModel

from model_service.tasks_app import tasks_app
from shared import logs
from shared.manifesting.ports import Description
from shared.models.assets import AssetType, BoundingBox


def _log_our_modules() -> None:
    """BentoML configures logging for its own loggers only; ours (the chosen onnxruntime
    provider, job progress) must reach the service's log too, as JSON lines in Cloud
    Logging's format (text with FRAMEFORK_LOG_FORMAT=text; shared/logs.py). BentoML's own
    handlers write JSON too in JSON mode, so that its tracebacks stay one entry each."""
    handler = logs.handler()
    for name in ("model_service", "shared", "framefork"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    for name in ("", "bentoml"):
        logs.adopt(logging.getLogger(name))


_log_our_modules()


class DetectionOut(BaseModel):
    class_name: str
    confidence: float
    box: BoundingBox
    asset_type: AssetType


class FaceOut(BaseModel):
    box: BoundingBox
    confidence: float
    landmarks: list[tuple[float, float]]
    embedding: list[float]
    model: str


class DescriptionOut(Description):
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    is_local: bool


class Health(BaseModel):
    status: str
    models: dict[str, str]


@bentoml.service(
    name="framefork-models",
    resources={"gpu": 1},
    traffic={"timeout": 900, "concurrency": 8},
)
@bentoml.asgi_app(tasks_app, path="/tasks")
class ModelService:
    def __init__(self) -> None:
        from model_service.factory import models

        self.models = models()

    @bentoml.api
    def health(self) -> Health:
        return Health(status="ok", models=self.models.names())

    @bentoml.api
    def detect(self, image: Image.Image) -> list[DetectionOut]:
        from shared.manifesting.classes import asset_type_for

        [detections] = self.models.detector.detect([image.convert("RGB")])
        return [
            DetectionOut(
                class_name=d.class_name,
                confidence=d.confidence,
                box=d.box,
                asset_type=asset_type_for(d.class_name),
            )
            for d in detections
        ]

    @bentoml.api
    def faces(self, image: Image.Image) -> list[FaceOut]:
        [faces] = self.models.faces.analyze([image.convert("RGB")])
        return [
            FaceOut(
                box=f.box,
                confidence=f.confidence,
                landmarks=[tuple(p) for p in f.landmarks],
                embedding=[float(v) for v in f.embedding],
                model=self.models.faces.name,
            )
            for f in faces
        ]

    @bentoml.api
    async def describe(self, image: Image.Image, asset_type: AssetType) -> DescriptionOut:
        from shared.manifesting.ports import DescribeRequest

        result = await self.models.describer.describe(
            DescribeRequest(image.convert("RGB"), asset_type)
        )
        return DescriptionOut(
            **result.description.model_dump(),
            model=result.model,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            is_local=result.is_local,
        )
