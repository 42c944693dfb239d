"""Backends chosen by settings (FRAMEFORK_MODELS__*), and the engine built on them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from shared.clients import firestore_client
from shared.manifesting.engine import ManifestingEngine, Models
from shared.manifesting.ports import Describer, FaceAnalyzer, ObjectDetector
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import ManifestRepository
from shared.settings import ModelSettings, get_settings
from shared.storage import default_blob_store


def build_detector(settings: ModelSettings) -> ObjectDetector:
    if settings.detector == "onnx-yolo":
        from model_service.backends.onnx_yolo import OnnxYoloDetector

        return OnnxYoloDetector(Path(settings.yolo_onnx_path))
    from model_service.backends.darknet_yolo import DarknetYoloDetector

    return DarknetYoloDetector(Path(settings.offline_dir))


def build_faces(settings: ModelSettings) -> FaceAnalyzer:
    if settings.faces == "insightface-buffalo-l":
        from model_service.backends.insightface_onnx import InsightFaceAnalyzer

        return InsightFaceAnalyzer(Path(settings.buffalo_dir))
    from model_service.backends.yunet_sface import YuNetSFaceAnalyzer

    return YuNetSFaceAnalyzer(Path(settings.offline_dir))


def build_describer(settings: ModelSettings) -> Describer:
    if settings.describer == "gemini":
        from model_service.backends.gemini_describer import GeminiDescriber

        if settings.gemini_api_key is None:
            raise ValueError(
                "FRAMEFORK_MODELS__GEMINI_API_KEY is required for the gemini describer"
            )
        return GeminiDescriber(
            settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            concurrency=settings.describe_concurrency,
        )
    from model_service.backends.local_describer import LocalDescriber

    return LocalDescriber()


@lru_cache(maxsize=1)
def models() -> Models:
    """Built once per process and loaded eagerly: the first job should not pay for it."""
    settings = get_settings().models
    built = Models(build_detector(settings), build_faces(settings), build_describer(settings))
    built.detector.load()
    built.faces.load()
    return built


@lru_cache(maxsize=1)
def engine() -> ManifestingEngine:
    settings = get_settings()
    db = firestore_client()
    return ManifestingEngine(
        ManifestRepository(db),
        JobRepository(db),
        default_blob_store(),
        settings.storage,
        settings.models,
        models(),
    )
