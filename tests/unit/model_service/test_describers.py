"""The describers: Gemini through the real google-genai client against a local stand-in of the
API, and the offline describer on synthetic images."""

from __future__ import annotations

import asyncio
import io
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from model_service.backends.gemini_describer import TYPE_INSTRUCTIONS, GeminiDescriber
from model_service.backends.local_describer import LocalDescriber, colour_name, measure
from shared.manifesting.ports import DescribeRequest, DescriberError, DescriptionResult
from shared.models.assets import AssetType
from shared.pipeline.genai_retry import backoff_delay
from shared.pipeline.prices import PRICES, UnknownModelError, is_priced, price_of, text_cost
from tests.support.gemini_standin import GeminiStandin, StandinReply

# google-genai subclasses aiohttp's session, which aiohttp frowns upon; nothing to act on here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

GOOD = {
    "reverse_prompt": "a weathered red bicycle with a wicker basket, side view, soft daylight",
    "visual_description": "A red step-through bicycle with a wicker basket on the handlebars.",
    "quality_score": 8.5,
    "suggested_name": "Red Basket Bicycle",
}


@pytest.fixture
def gemini_standin() -> Iterator[GeminiStandin]:
    with GeminiStandin() as standin:
        yield standin


def describer_for(standin: GeminiStandin, **overrides: Any) -> GeminiDescriber:
    """A describer on the stand-in, with backoffs short enough for a unit test."""
    options: dict[str, Any] = {
        "base_url": standin.base_url,
        "initial_backoff_s": 0.001,
        "max_backoff_s": 0.02,
        "timeout_s": 5.0,
        **overrides,
    }
    return GeminiDescriber("test-api-key", **options)


def describe_all(
    describer: GeminiDescriber | LocalDescriber, *requests: DescribeRequest
) -> list[DescriptionResult]:
    async def run() -> list[DescriptionResult]:
        try:
            return list(await asyncio.gather(*(describer.describe(r) for r in requests)))
        finally:
            if isinstance(describer, GeminiDescriber):
                await describer.aclose()

    return asyncio.run(run())


def describe_one(
    describer: GeminiDescriber | LocalDescriber, request: DescribeRequest
) -> DescriptionResult:
    return describe_all(describer, request)[0]


def a_request(
    asset_type: AssetType = AssetType.OBJECT,
    size: tuple[int, int] = (64, 48),
    hints: dict[str, str] | None = None,
) -> DescribeRequest:
    return DescribeRequest(Image.new("RGB", size, (200, 30, 30)), asset_type, hints or {})


# Gemini


def test_a_good_reply_becomes_a_description_with_tokens_and_cost(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.enqueue(
        StandinReply.ok(GOOD, prompt_tokens=1290, output_tokens=120, thoughts_tokens=30)
    )

    result = describe_one(describer_for(gemini_standin), a_request())

    assert result.description.model_dump() == GOOD
    assert result.model == "gemini-2.5-flash"
    assert not result.is_local
    # Thinking tokens are billed as output.
    assert (result.input_tokens, result.output_tokens) == (1290, 150)
    assert result.cost_usd == pytest.approx((1290 * 0.30 + 150 * 2.50) / 1_000_000)
    sent = gemini_standin.requests[0]
    assert sent.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert sent.headers["x-goog-api-key"] == "test-api-key"
    assert sent.generation_config["responseMimeType"] == "application/json"
    schema = sent.generation_config["responseSchema"]
    assert set(schema["properties"]) == set(GOOD)
    assert set(schema["required"]) == set(GOOD)
    assert "quality_score" in sent.system_text


def test_the_model_is_configurable_and_priced_from_the_table(gemini_standin: GeminiStandin) -> None:
    gemini_standin.enqueue(StandinReply.ok(GOOD, prompt_tokens=1000, output_tokens=100))

    result = describe_one(describer_for(gemini_standin, model="gemini-2.5-pro"), a_request())

    assert gemini_standin.requests[0].model == "gemini-2.5-pro"
    assert result.model == "gemini-2.5-pro"
    assert result.cost_usd == pytest.approx((1000 * 1.25 + 100 * 10.0) / 1_000_000)


def test_a_429_then_a_503_then_success_succeeds_on_the_third_attempt(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.enqueue(
        StandinReply.error(429, "Resource has been exhausted", retry_delay_s=0.01),
        StandinReply.error(503, "The model is overloaded"),
        StandinReply.ok(GOOD),
    )

    result = describe_one(describer_for(gemini_standin), a_request())

    assert result.description.suggested_name == GOOD["suggested_name"]
    assert gemini_standin.attempts == 3


def test_a_persistent_503_gives_up_after_max_attempts_exactly(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.default = StandinReply.error(503, "The model is overloaded")

    with pytest.raises(DescriberError, match=r"after 3 attempts.*503"):
        describe_one(describer_for(gemini_standin, max_attempts=3), a_request())
    # Exactly three: the client's own retry is off, so attempts never multiply.
    assert gemini_standin.attempts == 3


def test_a_reply_that_is_not_json_is_retried_then_refused_with_the_reason(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.enqueue(
        StandinReply.text("Sure! Here is the description you asked for"),
        StandinReply.text('{"reverse_prompt": "cut off'),
    )

    with pytest.raises(DescriberError, match=r"not a valid Description.*JSON") as raised:
        describe_one(describer_for(gemini_standin, max_attempts=2), a_request())
    assert "after 2 attempts" in str(raised.value)
    assert gemini_standin.attempts == 2


def test_an_unusable_reply_is_billed_and_retried(gemini_standin: GeminiStandin) -> None:
    gemini_standin.enqueue(
        StandinReply.text("not json", prompt_tokens=1000, output_tokens=10),
        StandinReply.ok(GOOD, prompt_tokens=1000, output_tokens=100),
    )

    result = describe_one(describer_for(gemini_standin), a_request())

    assert gemini_standin.attempts == 2
    assert (result.input_tokens, result.output_tokens) == (2000, 110)


def test_a_reply_outside_the_schema_is_refused_naming_the_field(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.default = StandinReply.ok({**GOOD, "quality_score": 12})

    with pytest.raises(DescriberError, match="quality_score"):
        describe_one(describer_for(gemini_standin, max_attempts=2), a_request())
    assert gemini_standin.attempts == 2


def test_a_400_is_not_retried(gemini_standin: GeminiStandin) -> None:
    gemini_standin.default = StandinReply.error(400, "Unable to process input image")

    with pytest.raises(DescriberError, match=r"400.*Unable to process input image"):
        describe_one(describer_for(gemini_standin), a_request())
    assert gemini_standin.attempts == 1


def test_a_blocked_request_is_not_retried(gemini_standin: GeminiStandin) -> None:
    gemini_standin.default = StandinReply.blocked("SAFETY")

    with pytest.raises(DescriberError, match=r"blocked.*SAFETY"):
        describe_one(describer_for(gemini_standin), a_request())
    assert gemini_standin.attempts == 1


def test_an_attempt_that_times_out_is_retried(gemini_standin: GeminiStandin) -> None:
    gemini_standin.enqueue(StandinReply.ok(GOOD, delay_s=1.0), StandinReply.ok(GOOD))

    started = time.monotonic()
    result = describe_one(describer_for(gemini_standin, timeout_s=0.2), a_request())

    assert result.description.suggested_name == GOOD["suggested_name"]
    assert gemini_standin.attempts == 2
    assert time.monotonic() - started < 1.0


def test_a_refused_connection_is_retried_promptly_and_bounded() -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    describer = GeminiDescriber(
        "test-api-key",
        base_url=f"http://127.0.0.1:{port}",
        max_attempts=2,
        initial_backoff_s=0.001,
        max_backoff_s=0.02,
    )

    started = time.monotonic()
    with pytest.raises(DescriberError, match="after 2 attempts"):
        describe_one(describer, a_request())
    # google-genai's own reconnect sleeps 1-10 s unless retry options are set.
    assert time.monotonic() - started < 1.0


def test_the_delay_a_429_asks_for_is_honoured(gemini_standin: GeminiStandin) -> None:
    gemini_standin.enqueue(StandinReply.error(429, retry_delay_s=0.3), StandinReply.ok(GOOD))

    describe_one(describer_for(gemini_standin, max_backoff_s=2.0), a_request())

    first, second = gemini_standin.requests
    assert second.started_at - first.started_at >= 0.3


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, initial=1.0, maximum=10.0, rng=rng) for n in range(1, 7)]

    for n, delay in enumerate(delays, start=1):
        ceiling = min(10.0, 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[:4]}) == 4
    assert backoff_delay(1, initial=1.0, maximum=10.0, server_hint=5.0, rng=rng) == 5.0
    assert backoff_delay(1, initial=1.0, maximum=10.0, server_hint=60.0, rng=rng) == 10.0


def test_concurrent_describes_never_exceed_the_limit(gemini_standin: GeminiStandin) -> None:
    gemini_standin.default = StandinReply.ok(GOOD, delay_s=0.1)

    results = describe_all(
        describer_for(gemini_standin, concurrency=2), *(a_request() for _ in range(6))
    )

    assert len(results) == 6
    assert gemini_standin.attempts == 6
    assert gemini_standin.max_in_flight == 2


def test_each_asset_type_gets_its_own_instructions(gemini_standin: GeminiStandin) -> None:
    gemini_standin.default = StandinReply.ok(GOOD)
    types = list(AssetType)

    describe_all(
        describer_for(gemini_standin, concurrency=1),
        *(a_request(asset_type) for asset_type in types),
    )

    sent = ["\n".join(request.texts()) for request in gemini_standin.requests]
    texts = {
        asset_type: text
        for asset_type in types
        for text in sent
        if text.startswith(f"Asset type: {asset_type.value}")
    }
    assert set(TYPE_INSTRUCTIONS) == set(AssetType)
    assert set(texts) == set(types)
    assert len(set(texts.values())) == len(types)
    assert "recognisable" in texts[AssetType.CHARACTER]
    assert "time of day" in texts[AssetType.ENVIRONMENT]
    assert "no subject nouns" in texts[AssetType.STYLE]


def test_hints_are_given_to_the_model_as_facts(gemini_standin: GeminiStandin) -> None:
    gemini_standin.enqueue(StandinReply.ok(GOOD))
    hints = {"name": "Aunt May", "detected": "person", "face": "yes"}

    describe_one(describer_for(gemini_standin), a_request(AssetType.CHARACTER, hints=hints))

    text = "\n".join(gemini_standin.requests[0].texts())
    assert "name given by the user: 'Aunt May'" in text
    assert "object detector's class: 'person'" in text
    assert "a face was detected: 'yes'" in text


def test_the_image_is_sent_inline_as_a_jpeg_within_the_max_side(
    gemini_standin: GeminiStandin,
) -> None:
    gemini_standin.default = StandinReply.ok(GOOD)
    transparent = Image.new("RGBA", (3000, 1000), (0, 0, 0, 0))
    small = Image.new("L", (300, 200), 128)

    describe_all(
        describer_for(gemini_standin, max_side=512, concurrency=1),
        DescribeRequest(transparent, AssetType.PROP),
        DescribeRequest(small, AssetType.OTHER),
    )

    sizes = []
    for request in gemini_standin.requests:
        ((mime, data),) = request.inline_images()
        assert mime == "image/jpeg"
        sent = Image.open(io.BytesIO(data))
        assert sent.format == "JPEG"
        assert sent.mode == "RGB"
        sizes.append(sent.size)
        # The image comes before the instructions, as Google advises for one image.
        assert "inlineData" in request.parts()[0] or "inline_data" in request.parts()[0]
    # Requests are encoded concurrently, so they may arrive in either order.
    assert sorted(sizes) == [(300, 200), (512, 171)]
    wide = next(
        Image.open(io.BytesIO(data))
        for request in gemini_standin.requests
        for _, data in request.inline_images()
        if Image.open(io.BytesIO(data)).size == (512, 171)
    )
    # Transparency becomes white, not black.
    assert min(np.asarray(wide)[10, 10]) >= 240


def test_a_describer_needs_an_api_key_and_hides_it() -> None:
    with pytest.raises(ValueError):
        GeminiDescriber("")
    assert "secret-key" not in repr(GeminiDescriber("secret-key"))


def test_prices_know_pinned_versions_and_longer_names_first() -> None:
    assert price_of("models/gemini-2.5-flash-001") == PRICES["gemini-2.5-flash"]
    assert price_of("gemini-2.5-flash-lite") == PRICES["gemini-2.5-flash-lite"]
    assert not is_priced("gemini-9-ultra")
    with pytest.raises(UnknownModelError):
        text_cost("gemini-9-ultra", 10, 10)
    assert text_cost("gemini-2.5-flash", 1_000_000, 0) == pytest.approx(0.30)


# Local


def test_a_red_image_is_described_as_red() -> None:
    result = describe_one(LocalDescriber(), a_request(AssetType.OBJECT, size=(400, 300)))

    assert result.is_local
    assert result.model == "local-describer-1"
    assert result.cost_usd == 0
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    assert "red" in result.description.reverse_prompt
    assert "red 100%" in result.description.visual_description
    assert "400×300 landscape" in result.description.visual_description
    assert result.description.suggested_name == "Red Object"


def test_colours_are_named_from_the_palette() -> None:
    assert colour_name((255, 0, 0)) == "red"
    assert colour_name((0, 0, 255)) == "blue"
    assert colour_name((0, 128, 0)) == "green"
    assert colour_name((250, 250, 250)) == "white"
    assert colour_name((255, 165, 0)) == "orange"


def test_the_largest_colours_come_first() -> None:
    image = Image.new("RGB", (100, 100), (0, 0, 255))
    image.paste((250, 250, 250), (0, 0, 100, 30))

    names = [name for name, _ in measure(image).colours]

    assert names == ["blue", "white"]


def _texture(size: int = 600) -> Image.Image:
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, size=(size // 12, size // 12, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize((size, size), Image.Resampling.NEAREST)


def test_a_blurry_image_scores_lower_than_a_sharp_one() -> None:
    sharp = _texture()
    blurry = sharp.filter(ImageFilter.GaussianBlur(6))

    sharp_result, blurry_result = describe_all(
        LocalDescriber(), a_request_for(sharp), a_request_for(blurry)
    )

    assert blurry_result.description.quality_score < sharp_result.description.quality_score - 3
    assert "sharp focus" in sharp_result.description.reverse_prompt
    assert "blurry focus" in blurry_result.description.reverse_prompt


def test_a_tiny_image_scores_lower_than_the_same_image_large() -> None:
    large = _texture(768)
    tiny = large.resize((96, 96), Image.Resampling.NEAREST)

    assert measure(tiny).quality_score < measure(large).quality_score


def a_request_for(image: Image.Image) -> DescribeRequest:
    return DescribeRequest(image, AssetType.OBJECT)


def test_hints_appear_in_the_local_prompt() -> None:
    hints = {"name": "Aunt May", "detected": "person", "face": "yes"}

    result = describe_one(
        LocalDescriber(), a_request(AssetType.CHARACTER, size=(300, 400), hints=hints)
    )

    prompt = result.description.reverse_prompt
    assert prompt.startswith("character reference: person named Aunt May")
    assert "face clearly visible" in prompt
    assert "portrait framing (3:4)" in prompt
    assert result.description.suggested_name == "Aunt May"
    assert "a face was found" in result.description.visual_description


def test_the_detected_class_names_an_unnamed_asset() -> None:
    result = describe_one(
        LocalDescriber(), a_request(AssetType.VEHICLE, hints={"detected_class": "bus"})
    )

    assert result.description.suggested_name == "Red Bus"
    assert "vehicle reference: bus" in result.description.reverse_prompt


def test_an_unreadable_image_is_a_describer_error() -> None:
    buffer = io.BytesIO()
    _texture(64).save(buffer, format="PNG")
    truncated = Image.open(io.BytesIO(buffer.getvalue()[:200]))

    with pytest.raises(DescriberError, match="could not be read"):
        describe_one(LocalDescriber(), a_request_for(truncated))
