"""The google-genai providers (Gemini text and image, Veo) through the real client against the
local stand-in of the API, and the price table behind cost estimates."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.oauth2.credentials import Credentials

from shared.pipeline import prices
from shared.pipeline.catalog import IMAGE_MODELS, TEXT_MODELS, VIDEO_MODELS
from shared.pipeline.genai_common import GenaiProvider
from shared.pipeline.genai_image import GeminiImageModel
from shared.pipeline.genai_retry import ProviderUnavailable, backoff_delay
from shared.pipeline.genai_text import GeminiTextModel
from shared.pipeline.genai_video import VeoVideoModel, mp4_facts
from shared.pipeline.ports import (
    AssetBrief,
    ClipOperation,
    ClipRequest,
    KeyframeRequest,
    ProviderError,
    ReferenceImage,
    StoryboardRequest,
)
from tests.support.gemini_standin import (
    GENERATE,
    POLL_VIDEO,
    START_VIDEO,
    GeminiStandin,
    StandinReply,
    VideoJob,
    sample_mp4,
    sample_png,
)

# google-genai subclasses aiohttp's session, which aiohttp frowns upon; nothing to act on here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

T = TypeVar("T")
FAST: dict[str, Any] = {"initial_backoff_s": 0.001, "max_backoff_s": 0.02, "timeout_s": 5.0}


@pytest.fixture
def standin() -> Iterator[GeminiStandin]:
    with GeminiStandin() as server:
        yield server


def run(provider: GenaiProvider, call: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            return await call()
        finally:
            await provider.aclose()

    return asyncio.run(go())


# Text


def scene(number: int, tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "title": f"Scene {number}",
        "description": f"What happens in scene {number}.",
        "shot_type": "wide" if number == 1 else "close_up",
        "keyframe_prompt": f"CHAR_01 on the quay, first frame of scene {number}",
        "end_keyframe_prompt": f"CHAR_01 on the quay, last frame of scene {number}",
        "motion_prompt": "She turns towards the sea; the camera pushes in.",
        "asset_tags": tags if tags is not None else ["CHAR_01"],
    }


def storyboard(scenes: int = 2) -> dict[str, Any]:
    return {
        "title": "Harbour at dawn",
        "style_guide": "35 mm film, cold blue palette, soft fog.",
        "characters": [{"tag": "CHAR_01", "name": "Ada", "description": "A woman in a red coat."}],
        "scenes": [scene(n) for n in range(1, scenes + 1)],
    }


def a_storyboard_request(scene_count: int = 2) -> StoryboardRequest:
    return StoryboardRequest(
        prompt="Ada waits for a boat that never comes.",
        style="noir",
        aspect_ratio="16:9",
        scene_count=scene_count,
        clip_seconds=8,
        assets=[
            AssetBrief(
                tag="CHAR_01",
                asset_type="CHARACTER",
                name="Ada",
                reverse_prompt="a woman in a red wool coat",
            ),
            AssetBrief(tag="ENV_01", asset_type="ENVIRONMENT", name="Harbour"),
        ],
    )


def text_model(standin: GeminiStandin, **overrides: Any) -> GeminiTextModel:
    return GeminiTextModel("test-key", base_url=standin.base_url, **{**FAST, **overrides})


def test_a_storyboard_is_parsed_with_its_tokens_and_cost(standin: GeminiStandin) -> None:
    standin.enqueue(
        StandinReply.ok(storyboard(), prompt_tokens=2000, output_tokens=1500, thoughts_tokens=500)
    )
    model = text_model(standin)

    draft, usage = run(model, lambda: model.storyboard(a_storyboard_request()))

    assert draft.title == "Harbour at dawn"
    assert [s.title for s in draft.scenes] == ["Scene 1", "Scene 2"]
    assert draft.scenes[1].shot_type == "close_up"
    assert draft.scenes[0].asset_tags == ["CHAR_01"]
    # Thinking is billed as output.
    assert (usage.model, usage.input_tokens, usage.output_tokens) == ("gemini-2.5-pro", 2000, 2000)
    assert usage.cost_usd == pytest.approx((2000 * 1.25 + 2000 * 10.0) / 1_000_000)
    sent = standin.requests[0]
    assert sent.path.endswith("/models/gemini-2.5-pro:generateContent")
    assert sent.headers["x-goog-api-key"] == "test-key"
    assert sent.generation_config["responseMimeType"] == "application/json"
    schema = sent.generation_config["responseSchema"]
    assert {"title", "style_guide", "scenes"} <= set(schema["properties"])
    assert "exactly the number of scenes" in sent.system_text
    assert "ONLY those tags" in sent.system_text
    asked = sent.texts()[0]
    assert "exactly 2" in asked and "8 seconds" in asked and "16:9" in asked
    assert "CHAR_01" in asked and "a woman in a red wool coat" in asked and "ENV_01" in asked


def test_without_assets_the_model_is_told_to_place_none(standin: GeminiStandin) -> None:
    standin.enqueue(StandinReply.ok({**storyboard(1), "scenes": [scene(1, tags=[])]}))
    model = text_model(standin, model="gemini-2.5-flash")
    request = StoryboardRequest("A kite over a field", None, "9:16", 1, 4)

    draft, usage = run(model, lambda: model.storyboard(request))

    assert draft.scenes[0].asset_tags == []
    assert standin.requests[0].model == "gemini-2.5-flash"
    assert "none; leave every asset_tags empty" in standin.requests[0].texts()[0]
    assert usage.cost_usd == pytest.approx((1290 * 0.30 + 120 * 2.50) / 1_000_000)


def test_a_429_then_success_succeeds_on_the_second_attempt(standin: GeminiStandin) -> None:
    standin.enqueue(
        StandinReply.error(429, "Resource has been exhausted", retry_delay_s=0.01),
        StandinReply.ok(storyboard()),
    )
    model = text_model(standin)

    draft, _ = run(model, lambda: model.storyboard(a_storyboard_request()))

    assert len(draft.scenes) == 2
    assert standin.attempts == 2


def test_invalid_json_then_a_valid_reply_is_retried_and_both_are_billed(
    standin: GeminiStandin,
) -> None:
    standin.enqueue(
        StandinReply.text('{"title": "Harbour', prompt_tokens=1000, output_tokens=10),
        StandinReply.ok(storyboard(), prompt_tokens=1000, output_tokens=900),
    )
    model = text_model(standin)

    draft, usage = run(model, lambda: model.storyboard(a_storyboard_request()))

    assert len(draft.scenes) == 2
    assert standin.attempts == 2
    assert (usage.input_tokens, usage.output_tokens) == (2000, 910)


def test_a_wrong_scene_count_is_asked_again(standin: GeminiStandin) -> None:
    standin.enqueue(StandinReply.ok(storyboard(3)), StandinReply.ok(storyboard(2)))
    model = text_model(standin)

    draft, _ = run(model, lambda: model.storyboard(a_storyboard_request(scene_count=2)))

    assert len(draft.scenes) == 2
    assert standin.attempts == 2


def test_replies_unusable_every_time_fail_for_good_naming_the_reason(
    standin: GeminiStandin,
) -> None:
    standin.default = StandinReply.ok({**storyboard(), "scenes": [{"title": "only a title"}]})
    model = text_model(standin, max_attempts=2)

    with pytest.raises(ProviderError, match=r"after 2 attempts.*not a valid storyboard") as raised:
        run(model, lambda: model.storyboard(a_storyboard_request()))
    assert not isinstance(raised.value, ProviderUnavailable)
    assert standin.attempts == 2


def test_a_persistent_503_gives_up_after_max_attempts_as_unavailable(
    standin: GeminiStandin,
) -> None:
    standin.default = StandinReply.error(503, "The model is overloaded")
    model = text_model(standin, max_attempts=3)

    with pytest.raises(ProviderUnavailable, match=r"after 3 attempts.*503"):
        run(model, lambda: model.storyboard(a_storyboard_request()))
    # The client's own retry is off, so attempts never multiply.
    assert standin.attempts == 3


def test_a_400_is_refused_at_once(standin: GeminiStandin) -> None:
    standin.default = StandinReply.error(400, "Request contains an invalid argument")
    model = text_model(standin)

    with pytest.raises(ProviderError, match=r"400.*invalid argument") as raised:
        run(model, lambda: model.storyboard(a_storyboard_request()))
    assert not isinstance(raised.value, ProviderUnavailable)
    assert standin.attempts == 1


def test_a_blocked_prompt_is_refused_at_once(standin: GeminiStandin) -> None:
    standin.default = StandinReply.blocked("PROHIBITED_CONTENT")
    model = text_model(standin)

    with pytest.raises(ProviderError, match=r"blocked.*PROHIBITED_CONTENT"):
        run(model, lambda: model.storyboard(a_storyboard_request()))
    assert standin.attempts == 1


def test_the_providers_need_a_key_and_hide_it() -> None:
    with pytest.raises(ValueError, match="API key"):
        GeminiTextModel("")
    with pytest.raises(ValueError, match="API key"):
        GeminiImageModel("")
    with pytest.raises(ValueError, match="API key or a Google Cloud project"):
        VeoVideoModel()
    assert "secret" not in repr(GeminiTextModel("secret"))
    assert "secret" not in repr(GeminiImageModel("secret"))
    assert "secret" not in repr(VeoVideoModel("secret"))


# Image


def references() -> list[ReferenceImage]:
    return [
        ReferenceImage("CHAR_01", sample_png(colour=(200, 0, 0)), "image/png"),
        ReferenceImage("ENV_01", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"),
        ReferenceImage("STYLE_01", sample_png(colour=(0, 0, 200)), "image/png"),
    ]


def image_model(standin: GeminiStandin, **overrides: Any) -> GeminiImageModel:
    return GeminiImageModel("test-key", base_url=standin.base_url, **{**FAST, **overrides})


def test_a_keyframe_sends_three_references_inline_and_returns_the_image(
    standin: GeminiStandin,
) -> None:
    made = sample_png((90, 160))
    standin.enqueue(StandinReply.image(made, text="Here it is.", prompt_tokens=4200))
    model = image_model(standin)
    refs = references()
    request = KeyframeRequest("CHAR_01 on the quay at dawn", "9:16", refs, seed=7)

    image = run(model, lambda: model.keyframe(request))

    assert (image.data, image.content_type) == (made, "image/png")
    assert image.usage.images == 1
    assert image.usage.model == "gemini-2.5-flash-image"
    assert image.usage.input_tokens == 4200
    assert image.usage.cost_usd == pytest.approx(0.039 + 4200 * 0.30 / 1_000_000)
    sent = standin.requests[0]
    assert sent.path.endswith("/models/gemini-2.5-flash-image:generateContent")
    assert sent.inline_images() == [(r.content_type, r.data) for r in refs]
    texts = sent.texts()
    assert texts[:3] == [
        "Reference image 1: CHAR_01",
        "Reference image 2: ENV_01",
        "Reference image 3: STYLE_01",
    ]
    assert texts[-1].startswith("CHAR_01 on the quay at dawn")
    assert "9:16" in texts[-1] and "portrait" in texts[-1]
    config = sent.generation_config
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "9:16"}
    assert config["seed"] == 7


def test_a_reply_without_an_image_is_asked_again(standin: GeminiStandin) -> None:
    standin.enqueue(
        StandinReply.no_image("STOP", text="I can describe it instead."),
        StandinReply.image(sample_png()),
    )
    model = image_model(standin)

    image = run(model, lambda: model.keyframe(KeyframeRequest("a quay", "16:9")))

    assert image.data == sample_png()
    assert standin.attempts == 2
    # The first attempt's prompt tokens were billed too.
    assert image.usage.input_tokens == 800 + 800


def test_a_503_then_an_image_succeeds(standin: GeminiStandin) -> None:
    standin.enqueue(StandinReply.error(503, "overloaded"), StandinReply.image(sample_png()))
    model = image_model(standin)

    image = run(model, lambda: model.keyframe(KeyframeRequest("a quay", "16:9")))

    assert image.content_type == "image/png"
    assert standin.attempts == 2


def test_an_image_safety_refusal_is_not_retried(standin: GeminiStandin) -> None:
    standin.default = StandinReply.no_image("IMAGE_SAFETY")
    model = image_model(standin)

    with pytest.raises(ProviderError, match="IMAGE_SAFETY"):
        run(model, lambda: model.keyframe(KeyframeRequest("a quay", "16:9")))
    assert standin.attempts == 1


def test_more_than_three_references_are_refused_before_any_call(standin: GeminiStandin) -> None:
    model = image_model(standin)
    refs = [*references(), ReferenceImage("PROP_01", sample_png(), "image/png")]

    with pytest.raises(ValueError, match="at most 3"):
        run(model, lambda: model.keyframe(KeyframeRequest("a quay", "16:9", refs)))
    assert standin.attempts == 0


# Veo

START = sample_png((160, 90), (10, 20, 30))
END = sample_png((160, 90), (200, 150, 100))


def a_clip(**overrides: Any) -> ClipRequest:
    values: dict[str, Any] = {
        "prompt": "She turns towards the sea",
        "start_frame": START,
        "end_frame": END,
        "seconds": 8,
        "aspect_ratio": "16:9",
        "audio": False,
    }
    values.update(overrides)
    return ClipRequest(**values)


def veo(standin: GeminiStandin, **overrides: Any) -> VeoVideoModel:
    return VeoVideoModel("vertex-key", base_url=standin.base_url, **{**FAST, **overrides})


def test_starting_a_clip_answers_the_operation_without_waiting(standin: GeminiStandin) -> None:
    standin.enqueue_video(VideoJob(polls_before_done=5))
    model = veo(standin)

    operation = run(model, lambda: model.start_clip(a_clip()))

    assert not operation.done and operation.video is None and operation.usage is None
    assert operation.name in standin.operations
    assert "/operations/" in operation.name
    assert len(standin.requests_to(START_VIDEO)) == 1
    assert standin.requests_to(POLL_VIDEO) == []
    sent = standin.requests[0]
    assert (
        sent.path
        == "/v1beta1/publishers/google/models/veo-3.0-fast-generate-001:predictLongRunning"
    )
    assert sent.headers["x-goog-api-key"] == "vertex-key"
    assert sent.instance["prompt"] == "She turns towards the sea"
    assert sent.instance_image() == ("image/png", START)
    # Veo 3.0 takes no last frame; it has audio, so audio is always said.
    assert sent.instance_image("lastFrame") is None
    assert sent.parameters == {
        "sampleCount": 1,
        "durationSeconds": 8,
        "aspectRatio": "16:9",
        "generateAudio": False,
    }


def test_polling_answers_not_done_until_the_clip_is_there(standin: GeminiStandin) -> None:
    clip = sample_mp4(8.0, audio=True)
    standin.enqueue_video(VideoJob(polls_before_done=2, video=clip))
    model = veo(standin)

    async def start_and_poll() -> list[ClipOperation]:
        seen = [await model.start_clip(a_clip(audio=True))]
        for _ in range(3):
            seen.append(await model.poll_clip(seen[-1]))
        return seen

    started, first, second, third = run(model, start_and_poll)

    assert not first.done and not second.done
    assert first.name == second.name == third.name == started.name
    assert third.done and third.error is None
    assert third.video == clip
    assert third.usage is not None
    assert third.usage.video_seconds == pytest.approx(8.0)
    assert third.usage.cost_usd == pytest.approx(8 * 0.15)  # with audio
    polls = standin.requests_to(POLL_VIDEO)
    assert len(polls) == 3
    assert polls[0].body == {"operationName": started.name}
    assert polls[0].path.endswith("/models/veo-3.0-fast-generate-001:fetchPredictOperation")
    assert standin.requests_to(START_VIDEO)[0].parameters["generateAudio"] is True


def test_a_silent_clip_costs_the_price_without_audio(standin: GeminiStandin) -> None:
    standin.enqueue_video(VideoJob(polls_before_done=0, video=sample_mp4(6.0)))
    model = veo(standin)

    async def start_and_poll() -> ClipOperation:
        return await model.poll_clip(await model.start_clip(a_clip(seconds=6)))

    done = run(model, start_and_poll)

    assert done.usage is not None
    assert done.usage.video_seconds == pytest.approx(6.0)
    assert done.usage.cost_usd == pytest.approx(6 * 0.10)


def test_a_model_with_a_last_frame_and_no_audio_gets_both_frames_and_no_audio_flag(
    standin: GeminiStandin,
) -> None:
    model = veo(standin, model="veo-2.0-generate-001")

    run(model, lambda: model.start_clip(a_clip(seconds=5, aspect_ratio="9:16")))

    sent = standin.requests[0]
    assert sent.model == "veo-2.0-generate-001"
    assert sent.instance_image() == ("image/png", START)
    assert sent.instance_image("lastFrame") == ("image/png", END)
    assert "generateAudio" not in sent.parameters
    assert sent.parameters["aspectRatio"] == "9:16"


def test_clip_settings_the_model_cannot_make_are_refused_before_any_call(
    standin: GeminiStandin,
) -> None:
    model = veo(standin, model="veo-2.0-generate-001")

    with pytest.raises(ProviderError, match="makes no audio"):
        run(model, lambda: model.start_clip(a_clip(seconds=5, audio=True)))
    with pytest.raises(ProviderError, match=r"5, 6, 7, 8 seconds, not 4"):
        run(model, lambda: model.start_clip(a_clip(seconds=4)))
    with pytest.raises(ProviderError, match="PNG, JPEG or WebP"):
        run(model, lambda: model.start_clip(a_clip(seconds=5, start_frame=b"GIF89a")))
    assert standin.attempts == 0


def test_an_operation_that_failed_answers_its_error(standin: GeminiStandin) -> None:
    standin.enqueue_video(
        VideoJob(polls_before_done=1, error="The prompt could not be processed", error_code=3),
        VideoJob(polls_before_done=0, filtered_reasons=("Celebrity likeness",)),
        VideoJob(polls_before_done=0, gcs_uri="gs://bucket/clip.mp4"),
    )
    model = veo(standin)

    async def start_and_poll_until_done() -> list[ClipOperation]:
        done = []
        for _ in range(3):
            operation = await model.start_clip(a_clip())
            while not operation.done:
                operation = await model.poll_clip(operation)
            done.append(operation)
        return done

    failed, filtered, elsewhere = run(model, start_and_poll_until_done)

    for operation in (failed, filtered, elsewhere):
        assert operation.done and operation.video is None and operation.usage is None
    assert failed.error == "Veo failed: The prompt could not be processed (code 3)"
    assert filtered.error == "Veo's safety filters removed the clip: Celebrity likeness"
    assert elsewhere.error is not None and "gs://bucket/clip.mp4" in elsewhere.error


def test_an_unknown_operation_is_a_provider_error(standin: GeminiStandin) -> None:
    model = veo(standin)
    gone = ClipOperation(
        name="projects/p/locations/us-central1/publishers/google/models/"
        "veo-3.0-fast-generate-001/operations/gone"
    )

    with pytest.raises(ProviderError, match="404"):
        run(model, lambda: model.poll_clip(gone))


def test_a_429_on_start_and_a_503_on_poll_are_retried(standin: GeminiStandin) -> None:
    standin.enqueue(StandinReply.error(429, "quota", retry_delay_s=0.01), method=START_VIDEO)
    standin.enqueue(StandinReply.error(503, "unavailable"), method=POLL_VIDEO)
    standin.enqueue_video(VideoJob(polls_before_done=0))
    model = veo(standin)

    async def start_and_poll() -> ClipOperation:
        return await model.poll_clip(await model.start_clip(a_clip()))

    done = run(model, start_and_poll)

    assert done.done and done.video == sample_mp4()
    assert len(standin.requests_to(START_VIDEO)) == 2
    assert len(standin.requests_to(POLL_VIDEO)) == 2
    assert standin.requests_to(GENERATE) == []
    # The two start attempts asked for one clip: only the answered one started an operation.
    assert len(standin.operations) == 1


def test_a_start_that_times_out_is_not_sent_again(standin: GeminiStandin) -> None:
    standin.enqueue(StandinReply.of_json(200, {"name": "late"}, delay_s=1.0), method=START_VIDEO)
    model = veo(standin, timeout_s=0.2)

    with pytest.raises(ProviderUnavailable, match="may have been accepted"):
        run(model, lambda: model.start_clip(a_clip()))
    assert standin.attempts == 1


def test_with_a_project_veo_runs_in_it_with_the_runtime_credentials(
    standin: GeminiStandin,
) -> None:
    model = VeoVideoModel(
        "ignored-key",
        base_url=standin.base_url,
        project="framefork-prod",
        location="europe-west4",
        credentials=Credentials(token="runtime-token"),  # type: ignore[no-untyped-call]
        **FAST,
    )

    run(model, lambda: model.start_clip(a_clip()))

    sent = standin.requests[0]
    assert sent.path == (
        "/v1beta1/projects/framefork-prod/locations/europe-west4/publishers/google/models/"
        "veo-3.0-fast-generate-001:predictLongRunning"
    )
    assert sent.headers["authorization"] == "Bearer runtime-token"
    assert "x-goog-api-key" not in sent.headers


def test_the_stand_in_clip_and_real_clips_are_measured(tmp_path: Path) -> None:
    assert mp4_facts(sample_mp4(4.0)) == (4.0, False)
    assert mp4_facts(sample_mp4(8.0, audio=True)) == (8.0, True)
    assert mp4_facts(b"not an mp4") is None
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        pytest.skip("no ffmpeg")
    for audio in (False, True):
        out = tmp_path / f"clip-{audio}.mp4"
        inputs = ["-f", "lavfi", "-i", "testsrc=size=64x36:rate=12"]
        if audio:
            inputs += ["-f", "lavfi", "-i", "sine=frequency=440"]
        subprocess.run(
            [ffmpeg, "-v", "error", *inputs, "-t", "2", "-c:v", "mpeg4", str(out)],
            check=True,
            timeout=60,
        )
        seconds, has_audio = mp4_facts(out.read_bytes()) or (0.0, None)
        assert seconds == pytest.approx(2.0, abs=0.1)
        assert has_audio is audio


# Prices


def test_every_catalog_model_has_a_price_of_its_kind() -> None:
    for name in TEXT_MODELS:
        assert isinstance(prices.price_of(name), prices.TextPrice), name
    for name in IMAGE_MODELS:
        assert isinstance(prices.price_of(name), prices.ImagePrice), name
    for name, spec in VIDEO_MODELS.items():
        price = prices.price_of(name)
        assert isinstance(price, prices.VideoPrice), name
        assert (price.per_second_with_audio is not None) == spec.audio, name


def test_estimates_for_known_models() -> None:
    assert prices.estimate_clips("veo-3.0-fast-generate-001", 3, 8, audio=True) == pytest.approx(
        3 * 8 * 0.15
    )
    assert prices.estimate_clips("veo-3.0-generate-001", 3, 8, audio=False) == pytest.approx(
        3 * 8 * 0.20
    )
    assert prices.estimate_keyframes("gemini-2.5-flash-image", 6, 3) == pytest.approx(
        6 * 0.039 + 6 * (400 + 3 * 1300) * 0.30 / 1_000_000
    )
    assert prices.estimate_storyboard("gemini-2.5-pro", 3, 2) == pytest.approx(
        ((1500 + 2 * 120) * 1.25 + (600 + 3 * 450 + 4000) * 10.0) / 1_000_000
    )
    estimate = prices.estimate_run(
        text_model="gemini-2.5-pro",
        image_model="gemini-2.5-flash-image",
        video_model="veo-3.0-fast-generate-001",
        scene_count=3,
        clip_seconds=8,
        audio=True,
        asset_count=2,
        references_per_keyframe=3,
    )
    assert estimate.storyboard == pytest.approx(prices.estimate_storyboard("gemini-2.5-pro", 3, 2))
    assert estimate.clips == pytest.approx(3 * 8 * 0.15)
    assert estimate.total == pytest.approx(estimate.storyboard + estimate.keyframes + 3.6)
    local = prices.estimate_run(
        text_model="local-storyboard-1",
        image_model="local-keyframe-1",
        video_model="local-clip-1",
        scene_count=30,
        clip_seconds=8,
        audio=True,
    )
    assert local.total == 0


def test_prices_know_pinned_versions_and_longer_names_first() -> None:
    assert prices.price_of("models/gemini-2.5-flash-001") == prices.PRICES["gemini-2.5-flash"]
    assert prices.price_of("gemini-2.5-flash-lite") == prices.PRICES["gemini-2.5-flash-lite"]
    assert (
        prices.price_of("gemini-2.5-flash-image-preview") == prices.PRICES["gemini-2.5-flash-image"]
    )


def test_an_unknown_model_or_use_is_a_clear_error() -> None:
    with pytest.raises(prices.UnknownModelError, match=r"no list price for model 'gpt-5'"):
        prices.estimate_storyboard("gpt-5", 3)
    with pytest.raises(prices.UnknownModelError, match="not priced as a text model"):
        prices.text_cost("gemini-2.5-flash-image", 10, 10)
    with pytest.raises(prices.UnknownModelError, match="makes no audio"):
        prices.estimate_clips("veo-2.0-generate-001", 1, 8, audio=True)
    assert not prices.is_priced("veo-9")


def test_a_provider_for_an_unpriced_model_warns_and_records_cost_zero(
    standin: GeminiStandin, caplog: pytest.LogCaptureFixture
) -> None:
    standin.enqueue(StandinReply.ok(storyboard(1)))
    with caplog.at_level(logging.WARNING):
        model = text_model(standin, model="gemini-9-experimental")
    assert "No list price for gemini-9-experimental" in caplog.text

    _, usage = run(model, lambda: model.storyboard(a_storyboard_request(1)))

    assert usage.input_tokens > 0 and usage.cost_usd == 0


def test_backoff_grows_with_jitter_honours_the_server_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, initial=1.0, maximum=8.0, rng=rng) for n in range(1, 7)]
    for retry, delay in enumerate(delays, start=1):
        ceiling = min(8.0, 2.0 ** (retry - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(1, initial=1.0, maximum=8.0, server_hint=5.0) == 5.0
    assert backoff_delay(1, initial=1.0, maximum=8.0, server_hint=60.0) == 8.0
