"""Providers by model name (G4): local-* models run offline, the others through google-genai."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ServiceUnavailable
from shared.models.projects import Project
from shared.pipeline.ports import ImageModel, Stitcher, TextModel, VideoModel
from shared.settings import get_settings


@dataclass(frozen=True)
class Providers:
    text: TextModel
    image: ImageModel
    video: VideoModel
    stitcher: Stitcher


def _api_key() -> str:
    key = get_settings().models.gemini_api_key
    if key is None:
        raise ServiceUnavailable("FRAMEFORK_MODELS__GEMINI_API_KEY is not set on this service")
    return key.get_secret_value()


def providers_for(project: Project) -> Providers:
    import shared.pipeline.local_provider as local

    base_url = get_settings().models.gemini_base_url
    text: TextModel
    image: ImageModel
    video: VideoModel
    if project.text_model.startswith("local-"):
        text = local.LocalTextModel()
    else:
        from shared.pipeline.genai_providers import GeminiTextModel

        text = GeminiTextModel(_api_key(), model=project.text_model, base_url=base_url)
    if project.image_model.startswith("local-"):
        image = local.LocalImageModel()
    else:
        from shared.pipeline.genai_providers import GeminiImageModel

        image = GeminiImageModel(_api_key(), model=project.image_model, base_url=base_url)
    if project.video_model.startswith("local-"):
        video = local.LocalVideoModel()
    else:
        from shared.pipeline.genai_providers import VeoVideoModel

        video = VeoVideoModel(_api_key(), model=project.video_model, base_url=base_url)
    return Providers(text, image, video, local.LocalStitcher())
