"""Providers by model name (G4): local-* models run offline, the others through google-genai.

Each is built on first use: a stage uses one model, and a project that moved to a model the
service holds no key for fails only at the stage that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from shared.errors import ServiceUnavailable
from shared.models.projects import Project
from shared.pipeline.ports import ImageModel, Stitcher, TextModel, VideoModel
from shared.settings import get_settings


class ProviderSet(Protocol):
    """The four providers a project's stages use."""

    @property
    def text(self) -> TextModel: ...
    @property
    def image(self) -> ImageModel: ...
    @property
    def video(self) -> VideoModel: ...
    @property
    def stitcher(self) -> Stitcher: ...


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


class LazyProviders:
    """The providers of one project, each built when a stage first asks for it."""

    def __init__(self, project: Project) -> None:
        self._project = project
        self._base_url = get_settings().models.gemini_base_url

    @cached_property
    def text(self) -> TextModel:
        import shared.pipeline.local_provider as local

        if self._project.text_model.startswith("local-"):
            return local.LocalTextModel()
        from shared.pipeline.genai_providers import GeminiTextModel

        return GeminiTextModel(_api_key(), model=self._project.text_model, base_url=self._base_url)

    @cached_property
    def image(self) -> ImageModel:
        import shared.pipeline.local_provider as local

        if self._project.image_model.startswith("local-"):
            return local.LocalImageModel()
        from shared.pipeline.genai_providers import GeminiImageModel

        return GeminiImageModel(
            _api_key(), model=self._project.image_model, base_url=self._base_url
        )

    @cached_property
    def video(self) -> VideoModel:
        import shared.pipeline.local_provider as local

        if self._project.video_model.startswith("local-"):
            return local.LocalVideoModel()
        from shared.pipeline.genai_providers import VeoVideoModel

        models = get_settings().models
        if models.vertex_project:
            return VeoVideoModel(
                model=self._project.video_model,
                base_url=self._base_url,
                project=models.vertex_project,
                location=models.vertex_location,
            )
        if models.vertex_api_key is None:
            raise ServiceUnavailable(
                "Veo needs FRAMEFORK_MODELS__VERTEX_PROJECT or FRAMEFORK_MODELS__VERTEX_API_KEY"
            )
        return VeoVideoModel(
            models.vertex_api_key.get_secret_value(),
            model=self._project.video_model,
            base_url=self._base_url,
        )

    @cached_property
    def stitcher(self) -> Stitcher:
        import shared.pipeline.local_provider as local

        return local.LocalStitcher()


def providers_for(project: Project) -> ProviderSet:
    return LazyProviders(project)
