"""List prices of the generation models, and cost estimates made from them before a run (G5).

One table, one entry per model: Gemini text models per million tokens in and out, Gemini image
models per generated image (plus their input tokens), Veo per second of video, with and without
audio. These are Google's published list prices in USD, standard (not batch) requests: the
Gemini Developer API for text and image, Vertex AI for Veo (where the Veo provider runs). They
change: update them from https://ai.google.dev/gemini-api/docs/pricing and
https://cloud.google.com/vertex-ai/generative-ai/pricing when a model is added or a price
moves. Billing is the source of truth; these figures make costs visible before and after a run.

A model missing from the table is an error here (`UnknownModelError`), never a silent zero: an
estimate that leaves out a stage would look cheap for the wrong reason. The providers, which
record what a call that already happened cost, log a warning once and record 0 instead, because
a finished generation must not be lost over a missing price.

Output prices cover thinking tokens too: Google bills them as output. Text models priced by tier
(2.5 Pro above 200k prompt tokens) carry the lower tier only: a storyboard prompt stays far
below it. Local models cost nothing and are listed so that estimates for local runs work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar


class UnknownModelError(ValueError):
    """The price table does not know this model (or not for this use)."""


@dataclass(frozen=True)
class TextPrice:
    input_per_million: float
    """USD per 1M prompt tokens (text and image input)."""
    output_per_million: float
    """USD per 1M output tokens, thinking included."""


@dataclass(frozen=True)
class ImagePrice:
    per_image: float
    """USD per generated image at the default (1K) size."""
    input_per_million: float
    """USD per 1M prompt tokens: the prompt and the reference images."""


@dataclass(frozen=True)
class VideoPrice:
    per_second: float
    """USD per second of video without audio."""
    per_second_with_audio: float | None
    """USD per second of video with audio; None for a model that makes no audio."""


Price = TextPrice | ImagePrice | VideoPrice

PRICES: dict[str, Price] = {
    # Gemini text (storyboards, reverse prompts of reference images).
    "gemini-2.5-pro": TextPrice(input_per_million=1.25, output_per_million=10.00),
    "gemini-2.5-flash": TextPrice(input_per_million=0.30, output_per_million=2.50),
    "gemini-2.5-flash-lite": TextPrice(input_per_million=0.10, output_per_million=0.40),
    "gemini-2.0-flash": TextPrice(input_per_million=0.10, output_per_million=0.40),
    "gemini-2.0-flash-lite": TextPrice(input_per_million=0.075, output_per_million=0.30),
    # Gemini image (keyframes): 1290 output tokens per 1K image at $30 per 1M.
    "gemini-2.5-flash-image": ImagePrice(per_image=0.039, input_per_million=0.30),
    # Veo (clips).
    "veo-3.1-generate-001": VideoPrice(per_second=0.20, per_second_with_audio=0.40),
    "veo-3.1-generate-preview": VideoPrice(per_second=0.20, per_second_with_audio=0.40),
    "veo-3.1-fast-generate-001": VideoPrice(per_second=0.10, per_second_with_audio=0.15),
    "veo-3.1-fast-generate-preview": VideoPrice(per_second=0.10, per_second_with_audio=0.15),
    "veo-3.0-generate-001": VideoPrice(per_second=0.20, per_second_with_audio=0.40),
    "veo-3.0-fast-generate-001": VideoPrice(per_second=0.10, per_second_with_audio=0.15),
    "veo-2.0-generate-001": VideoPrice(per_second=0.50, per_second_with_audio=None),
    # The local provider.
    "local-storyboard-1": TextPrice(input_per_million=0.0, output_per_million=0.0),
    "local-keyframe-1": ImagePrice(per_image=0.0, input_per_million=0.0),
    "local-clip-1": VideoPrice(per_second=0.0, per_second_with_audio=0.0),
}

# Rough sizes of the calls a run makes, for estimates only (the ledger records real counts).
STORYBOARD_BASE_INPUT_TOKENS = 1_500
"""System instruction, rules and the user's prompt."""
STORYBOARD_INPUT_TOKENS_PER_ASSET = 120
"""One asset's tag, type, name and reverse prompt."""
STORYBOARD_BASE_OUTPUT_TOKENS = 600
"""Title, style guide and character notes."""
STORYBOARD_OUTPUT_TOKENS_PER_SCENE = 450
"""One scene's fields: three prompts, description, shot type, tags."""
STORYBOARD_THINKING_TOKENS = 4_000
"""What a thinking model spends before answering, billed as output."""
KEYFRAME_PROMPT_TOKENS = 400
REFERENCE_IMAGE_TOKENS = 1_300
"""A reference image of about 1k pixels: four 768-pixel tiles of 258 tokens, and labels."""


def price_of(model: str) -> Price:
    """The list price of a model, accepting the "models/" prefix and pinned versions
    ("gemini-2.5-flash-001"); UnknownModelError when the table does not know it."""
    name = model.removeprefix("models/")
    # The longest known name that prefixes the model wins, so "gemini-2.5-flash-lite-…" is
    # never priced as "gemini-2.5-flash", nor "gemini-2.5-flash-image" as a text model.
    for known in sorted(PRICES, key=len, reverse=True):
        if name == known or name.startswith(known + "-"):
            return PRICES[known]
    raise UnknownModelError(
        f"no list price for model {model!r}; known: {', '.join(sorted(PRICES))} "
        "(add it to shared/pipeline/prices.py)"
    )


def is_priced(model: str) -> bool:
    try:
        price_of(model)
    except UnknownModelError:
        return False
    return True


_P = TypeVar("_P", TextPrice, ImagePrice, VideoPrice)


def _expect(model: str, kind: type[_P], use: str) -> _P:
    price = price_of(model)
    if not isinstance(price, kind):
        raise UnknownModelError(f"{model!r} is not priced as {use}")
    return price


def text_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    """USD for a text call with these token counts (output includes thinking)."""
    price = _expect(model, TextPrice, "a text model")
    return (
        input_tokens * price.input_per_million + output_tokens * price.output_per_million
    ) / 1_000_000


def image_cost(model: str, images: int, input_tokens: int = 0) -> float:
    """USD for `images` generated images and the prompt tokens that asked for them."""
    price = _expect(model, ImagePrice, "an image model")
    return images * price.per_image + input_tokens * price.input_per_million / 1_000_000


def video_cost(model: str, seconds: float, audio: bool) -> float:
    """USD for `seconds` of video, with or without audio."""
    price = _expect(model, VideoPrice, "a video model")
    if not audio:
        return seconds * price.per_second
    if price.per_second_with_audio is None:
        raise UnknownModelError(f"{model!r} makes no audio, so it has no price with audio")
    return seconds * price.per_second_with_audio


def estimate_storyboard(model: str, scene_count: int, asset_count: int = 0) -> float:
    """USD for one storyboard call of `scene_count` scenes over `asset_count` assets."""
    input_tokens = STORYBOARD_BASE_INPUT_TOKENS + asset_count * STORYBOARD_INPUT_TOKENS_PER_ASSET
    output_tokens = (
        STORYBOARD_BASE_OUTPUT_TOKENS
        + scene_count * STORYBOARD_OUTPUT_TOKENS_PER_SCENE
        + STORYBOARD_THINKING_TOKENS
    )
    return text_cost(model, input_tokens, output_tokens)


def estimate_keyframes(model: str, count: int, references_per_keyframe: int = 0) -> float:
    """USD for `count` keyframes, each sent with `references_per_keyframe` images."""
    input_tokens = KEYFRAME_PROMPT_TOKENS + references_per_keyframe * REFERENCE_IMAGE_TOKENS
    return image_cost(model, count, count * input_tokens)


def estimate_clips(model: str, count: int, seconds: float, audio: bool) -> float:
    """USD for `count` clips of `seconds` each."""
    return video_cost(model, count * seconds, audio)


@dataclass(frozen=True)
class CostEstimate:
    """What a whole run should cost at list price, by stage, in USD."""

    storyboard: float
    keyframes: float
    clips: float

    @property
    def total(self) -> float:
        return self.storyboard + self.keyframes + self.clips


def estimate_run(
    *,
    text_model: str,
    image_model: str,
    video_model: str,
    scene_count: int,
    clip_seconds: float,
    audio: bool,
    asset_count: int = 0,
    keyframes_per_scene: int = 2,
    references_per_keyframe: int = 0,
) -> CostEstimate:
    """A run's cost before it starts: one storyboard, `keyframes_per_scene` keyframes per
    scene (start and end frames), one clip per scene. Stitching is local and free."""
    return CostEstimate(
        storyboard=estimate_storyboard(text_model, scene_count, asset_count),
        keyframes=estimate_keyframes(
            image_model, scene_count * keyframes_per_scene, references_per_keyframe
        ),
        clips=estimate_clips(video_model, scene_count, clip_seconds, audio),
    )
