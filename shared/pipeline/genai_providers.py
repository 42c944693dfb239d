"""The real generation providers (G4): Gemini text and image models on the Gemini Developer
API, Veo on Vertex AI, all through google-genai. Each module holds one; this one gathers them.

They import google-genai, which only the deployables that generate need: import this module
where a real provider is chosen, not at the top of code every deployable loads.
"""

from shared.pipeline.genai_image import DEFAULT_IMAGE_MODEL, GeminiImageModel
from shared.pipeline.genai_retry import ProviderUnavailable
from shared.pipeline.genai_text import DEFAULT_TEXT_MODEL, GeminiTextModel
from shared.pipeline.genai_video import DEFAULT_VIDEO_MODEL, VeoVideoModel

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEXT_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "GeminiImageModel",
    "GeminiTextModel",
    "ProviderUnavailable",
    "VeoVideoModel",
]
