"""Keyframes from a Gemini image model, with the scene's reference images sent inline (G4).

The references go before the prompt, each labelled with its asset tag, so the prompt can name
what it shows ("CHAR_01 opens the door") and the model knows which image that is. The aspect
ratio is asked for in the image config, and said again in the prompt for models that ignore
the config. The reply's first inline image is the keyframe.
"""

from __future__ import annotations

import logging

from google import genai
from google.genai import types

from shared.pipeline.genai_common import GenaiProvider, check_answered, finish_reason, make_client
from shared.pipeline.genai_common import token_counts as read_tokens
from shared.pipeline.genai_retry import RetryPolicy, Unusable, call_with_retries
from shared.pipeline.ports import GeneratedImage, KeyframeRequest, Usage
from shared.pipeline.prices import UnknownModelError, image_cost

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "gemini-2.5-flash-image"
MAX_REFERENCES = 3
"""What the pipeline sends at most (G3), and what Gemini image models handle best."""

_ORIENTATION = {"16:9": "landscape", "9:16": "portrait"}


def keyframe_contents(request: KeyframeRequest) -> types.Content:
    parts: list[types.Part] = []
    for number, reference in enumerate(request.references, start=1):
        parts.append(types.Part.from_text(text=f"Reference image {number}: {reference.tag}"))
        parts.append(types.Part.from_bytes(data=reference.data, mime_type=reference.content_type))
    text = request.prompt.strip()
    if request.references:
        tags = ", ".join(reference.tag for reference in request.references)
        text += (
            f"\n\nThe reference images show {tags} as they must look: keep them recognisable "
            "(faces, hair, clothes, colours, shapes, markings). Take only the subjects from "
            "them, not their backgrounds, framing or lighting."
        )
    text += (
        f"\n\nMake one {_ORIENTATION[request.aspect_ratio]} image, aspect ratio "
        f"{request.aspect_ratio}, with no text, captions or borders."
    )
    parts.append(types.Part.from_text(text=text))
    return types.Content(role="user", parts=parts)


def read_image(response: types.GenerateContentResponse) -> tuple[bytes, str]:
    """(bytes, mime type) of the reply's first inline image, or Unusable saying why none."""
    check_answered(response, "keyframe")
    content = response.candidates[0].content if response.candidates else None
    said: list[str] = []
    for part in (content.parts if content is not None else None) or []:
        blob = part.inline_data
        if blob is not None and blob.data and (blob.mime_type or "").startswith("image/"):
            return blob.data, blob.mime_type or "image/png"
        if part.text:
            said.append(part.text.strip())
    finish = finish_reason(response) or "none"
    detail = f": {' '.join(said)[:200]!r}" if said else ""
    raise Unusable(f"the reply had no image (finish reason {finish}){detail}", retryable=True)


class GeminiImageModel(GenaiProvider):
    """An ImageModel on the Gemini Developer API."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_IMAGE_MODEL,
        base_url: str | None = None,
        max_attempts: int = 4,
        initial_backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
    ) -> None:
        if not api_key:
            raise ValueError("GeminiImageModel needs an API key")
        super().__init__(
            model,
            RetryPolicy(
                max_attempts=max_attempts,
                initial_backoff_s=initial_backoff_s,
                max_backoff_s=max_backoff_s,
                timeout_s=timeout_s,
            ),
        )
        self._api_key = api_key
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"GeminiImageModel(model={self.name!r}, base_url={self.base_url!r})"

    def _make_client(self) -> genai.Client:
        return make_client(api_key=self._api_key, base_url=self.base_url, policy=self.policy)

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage:
        if len(request.references) > MAX_REFERENCES:
            raise ValueError(
                f"at most {MAX_REFERENCES} reference images per keyframe, "
                f"got {len(request.references)}"
            )
        client = self.client
        contents = keyframe_contents(request)
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=request.aspect_ratio),
            seed=request.seed,
        )
        # Every answered attempt is billed, the unusable ones too.
        spent = [0, 0]

        async def attempt() -> tuple[bytes, str]:
            response = await client.aio.models.generate_content(
                model=self.name, contents=contents, config=config
            )
            got_in, got_out = read_tokens(response)
            spent[0] += got_in
            spent[1] += got_out
            return read_image(response)

        data, content_type = await call_with_retries(
            attempt, policy=self.policy, what=f"Gemini keyframe ({self.name})"
        )
        return GeneratedImage(
            data=data, content_type=content_type, usage=self._usage(spent[0], spent[1])
        )

    def _usage(self, input_tokens: int, output_tokens: int) -> Usage:
        # An image model bills its image per image; input tokens (prompt and references)
        # per token. Text some unusable attempt wrote is left out: a few hundred tokens.
        try:
            cost = image_cost(self.name, 1, input_tokens)
        except UnknownModelError:
            cost = 0.0
        return Usage(
            model=self.name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            images=1,
            cost_usd=cost,
        )
