"""Clips from Veo as long-running operations, started and polled without waiting (G4).

`start_clip` asks Veo for one clip that starts on the scene's first keyframe (and ends on its
last one where the model takes a last frame) and answers the operation's name at once;
`poll_clip` asks about the operation once. The pipeline polls with delayed tasks, so no
function ever waits minutes for a clip.

Veo runs on Vertex AI here: the google-genai client starts video generation only in Vertex AI
mode (in Gemini Developer API mode `generate_videos` raises ValueError). The client posts
`{model}:predictLongRunning` to start and `{model}:fetchPredictOperation` to poll. It is
authorised either by a Vertex AI API key (express mode) or by a Google Cloud project and
location with the runtime's credentials (a service account on Cloud Functions).

The video comes back inline (no output bucket is set). What a clip cost is measured from the
MP4 itself (its duration and whether it has a sound track), because the operation's name is
all a poll is given.
"""

from __future__ import annotations

import logging
import struct

from google import genai
from google.auth.credentials import Credentials
from google.genai import types

from shared.pipeline.catalog import VIDEO_MODELS
from shared.pipeline.genai_common import GenaiProvider, make_client
from shared.pipeline.genai_retry import RetryPolicy, call_with_retries
from shared.pipeline.ports import ClipOperation, ClipRequest, ProviderError, Usage
from shared.pipeline.prices import UnknownModelError, video_cost

logger = logging.getLogger(__name__)

DEFAULT_VIDEO_MODEL = "veo-3.0-fast-generate-001"
DEFAULT_LOCATION = "us-central1"


def image_mime_type(data: bytes) -> str:
    """The content type of a keyframe, from its first bytes (Veo needs it said)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ProviderError("a clip's frames must be PNG, JPEG or WebP images")


# Boxes that hold the ones read here: movie → track → media → handler.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia"})


def mp4_facts(data: bytes) -> tuple[float, bool] | None:
    """(duration in seconds, has a sound track) of an MP4, from its movie header and its
    tracks' handlers; None when it has no readable movie header."""
    duration: float | None = None
    audio = False

    def walk(start: int, end: int) -> None:
        nonlocal duration, audio
        at = start
        while at + 8 <= end:
            size, kind = struct.unpack_from(">I4s", data, at)
            header = 8
            if size == 1:  # a 64-bit size follows the type
                if at + 16 > end:
                    return
                size = struct.unpack_from(">Q", data, at + 8)[0]
                header = 16
            elif size == 0:  # the box runs to the end
                size = end - at
            if size < header or at + size > end:
                return
            body = at + header
            if kind in _CONTAINERS:
                walk(body, at + size)
            elif kind == b"mvhd" and at + size >= body + 32:
                if data[body] == 1:
                    timescale, length = struct.unpack_from(">IQ", data, body + 20)
                else:
                    timescale, length = struct.unpack_from(">II", data, body + 12)
                if timescale:
                    duration = length / timescale
            elif (
                kind == b"hdlr" and at + size >= body + 12 and data[body + 8 : body + 12] == b"soun"
            ):
                audio = True
            at += size

    walk(0, len(data))
    return None if duration is None else (duration, audio)


class VeoVideoModel(GenaiProvider):
    """A VideoModel on Veo through Vertex AI."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = DEFAULT_VIDEO_MODEL,
        base_url: str | None = None,
        project: str | None = None,
        location: str = DEFAULT_LOCATION,
        credentials: Credentials | None = None,
        person_generation: str | None = None,
        resolution: str | None = None,
        max_attempts: int = 4,
        initial_backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
    ) -> None:
        """`api_key` is a Vertex AI key (express mode); with `project` the client uses the
        runtime's credentials (or `credentials`) in `location` instead, and no key."""
        if not api_key and not project:
            raise ValueError("VeoVideoModel needs a Vertex AI API key or a Google Cloud project")
        super().__init__(
            model,
            RetryPolicy(
                max_attempts=max_attempts,
                initial_backoff_s=initial_backoff_s,
                max_backoff_s=max_backoff_s,
                timeout_s=timeout_s,
            ),
        )
        self._api_key = None if project else api_key
        self.base_url = base_url
        self.project = project
        self.location = location
        self._credentials = credentials
        self.person_generation = person_generation
        self.resolution = resolution
        self.spec = VIDEO_MODELS.get(model)
        if self.spec is None:
            logger.warning(
                "%s is not in the model catalog: clip lengths, audio and last frames go to "
                "Veo unchecked",
                model,
            )

    def __repr__(self) -> str:
        where = f"project={self.project!r}" if self.project else "api key"
        return f"VeoVideoModel(model={self.name!r}, {where}, base_url={self.base_url!r})"

    def _make_client(self) -> genai.Client:
        return make_client(
            api_key=self._api_key,
            base_url=self.base_url,
            policy=self.policy,
            vertexai=True,
            project=self.project,
            location=self.location if self.project else None,
            credentials=self._credentials,
        )

    def _config(self, request: ClipRequest) -> types.GenerateVideosConfig:
        spec = self.spec
        if spec is not None and request.seconds not in spec.clip_seconds:
            lengths = ", ".join(str(s) for s in spec.clip_seconds)
            raise ProviderError(
                f"{self.name} makes clips of {lengths} seconds, not {request.seconds}"
            )
        if spec is not None and request.audio and not spec.audio:
            raise ProviderError(f"{self.name} makes no audio")
        last_frame = None
        if request.end_frame is not None:
            if spec is None or spec.end_frame:
                last_frame = types.Image(
                    image_bytes=request.end_frame, mime_type=image_mime_type(request.end_frame)
                )
            else:
                # The clip still starts on the first keyframe and follows the motion prompt;
                # the model cannot be told where to end.
                logger.debug("%s takes no last frame: the end keyframe is not sent", self.name)
        return types.GenerateVideosConfig(
            number_of_videos=1,
            duration_seconds=request.seconds,
            seed=request.seed,
            aspect_ratio=request.aspect_ratio,
            last_frame=last_frame,
            # Said whenever the model has audio: Veo 3 would add a sound track by default.
            generate_audio=request.audio if spec is None or spec.audio else None,
            person_generation=self.person_generation,
            resolution=self.resolution,
        )

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        client = self.client
        config = self._config(request)
        source = types.GenerateVideosSource(
            prompt=request.prompt,
            image=types.Image(
                image_bytes=request.start_frame, mime_type=image_mime_type(request.start_frame)
            ),
        )

        async def attempt() -> types.GenerateVideosOperation:
            return await client.aio.models.generate_videos(
                model=self.name, source=source, config=config
            )

        started = await call_with_retries(
            attempt,
            policy=self.policy,
            what=f"Veo start ({self.name})",
            # A start that timed out may have been accepted: sending it again could pay for
            # two clips.
            retry_timeouts=False,
        )
        if not started.name:
            raise ProviderError(f"Veo start ({self.name}): the answer named no operation")
        return ClipOperation(name=started.name)

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation:
        if operation.done:
            return operation
        client = self.client
        # Only the name matters to the poll; the type tells the client how to read the answer.
        asked = types.GenerateVideosOperation.model_validate({"name": operation.name})

        async def attempt() -> types.GenerateVideosOperation:
            return await client.aio.operations.get(asked)

        current = await call_with_retries(
            attempt, policy=self.policy, what=f"Veo poll ({self.name})"
        )
        if not current.done:
            return ClipOperation(name=operation.name)
        clip = self._clip_of(current)
        if isinstance(clip, str):
            return ClipOperation(name=operation.name, done=True, error=clip)
        return ClipOperation(
            name=operation.name, done=True, video=clip, usage=self._usage(clip, operation.usage)
        )

    def _clip_of(self, current: types.GenerateVideosOperation) -> bytes | str:
        """A finished operation's clip, or why it has none."""
        if current.error:
            message = current.error.get("message") or "no message"
            code = current.error.get("code")
            return f"Veo failed: {message}" + (f" (code {code})" if code is not None else "")
        result = current.response or current.result
        videos = (result.generated_videos if result is not None else None) or []
        video = videos[0].video if videos else None
        if video is None:
            reasons = (result.rai_media_filtered_reasons if result is not None else None) or []
            if reasons:
                return "Veo's safety filters removed the clip: " + "; ".join(reasons)
            return "Veo finished without a clip"
        if video.video_bytes:
            return video.video_bytes
        if video.uri:
            return (
                f"Veo stored the clip at {video.uri} instead of answering it inline; "
                "this provider reads inline clips only"
            )
        return "Veo answered a clip without bytes"

    def _usage(self, video: bytes, told: Usage | None) -> Usage:
        facts = mp4_facts(video)
        if facts is None:
            logger.warning("A clip from %s has no readable MP4 header: not costed", self.name)
            return told or Usage(model=self.name)
        seconds, audio = facts
        try:
            cost = video_cost(self.name, seconds, audio)
        except UnknownModelError:
            cost = 0.0
        return Usage(model=self.name, video_seconds=seconds, cost_usd=cost)
