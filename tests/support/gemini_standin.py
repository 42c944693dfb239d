"""A local server that answers like the Gemini API, scripted per test.

The real google-genai client is pointed at it through its base_url, so tests exercise the
client's own request building, error mapping and response parsing without reaching Google.
It answers three methods, wherever the model path sits (`/v1/models/M:…` as the Gemini
Developer API spells it, `/v1beta1/[projects/P/locations/L/]publishers/google/models/M:…` as
Vertex AI does):

- `generateContent`: text and structured output, and images (inline data) for image models;
- `predictLongRunning`: what the client's `generate_videos` posts (Veo); it starts an
  operation and answers its name;
- `fetchPredictOperation`: what the client's `operations.get` posts for such an operation on
  Vertex AI; it answers "not done" a scripted number of times, then done with the video
  (inline bytes or a Cloud Storage uri), an error, or a safety filter's verdict.

Each method has its own queue of scripted replies (errors, delays, anything): a scripted reply
is served before the method's normal behaviour. generateContent falls back to `default`; the
video methods fall back to the operations, started from the queue of `VideoJob`s (then
`default_video_job`). Every request is recorded, and the number in flight at once is tracked.

    with GeminiStandin() as standin:
        standin.enqueue(StandinReply.error(429, retry_delay_s=0.01), StandinReply.ok({...}))
        client = genai.Client(api_key="k", http_options={"base_url": standin.base_url})
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from PIL import Image

GENERATE = "generateContent"
START_VIDEO = "predictLongRunning"
POLL_VIDEO = "fetchPredictOperation"

_ROUTE = re.compile(
    r"^/(?P<version>v1[a-z0-9]*)/(?P<parent>(?:[^:]*/)?)models/(?P<model>[^/:]+)"
    rf":(?P<method>{GENERATE}|{START_VIDEO}|{POLL_VIDEO})$"
)

# google.rpc.Code names the API puts in error.status for each HTTP status.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class StandinReply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Seconds to wait before answering (to hold requests in flight, or to time out)."""

    @classmethod
    def of_json(
        cls,
        status: int,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> StandinReply:
        return cls(
            status=status,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
            delay_s=delay_s,
        )

    @classmethod
    def text(
        cls,
        text: str,
        *,
        prompt_tokens: int = 1290,
        output_tokens: int = 120,
        thoughts_tokens: int = 0,
        finish_reason: str = "STOP",
        model_version: str = "gemini-2.5-flash",
        delay_s: float = 0.0,
    ) -> StandinReply:
        """A 200 whose single candidate carries `text`, valid JSON or not."""
        usage: dict[str, int] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens + thoughts_tokens,
        }
        if thoughts_tokens:
            usage["thoughtsTokenCount"] = thoughts_tokens
        payload = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": model_version,
            "responseId": "standin-response",
        }
        return cls.of_json(200, payload, delay_s=delay_s)

    @classmethod
    def ok(cls, structured: Mapping[str, Any], **kwargs: Any) -> StandinReply:
        """A 200 whose candidate is `structured` as JSON text, as structured output comes."""
        return cls.text(json.dumps(structured), **kwargs)

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        retry_delay_s: float | None = None,
        retry_after_header: str | None = None,
        delay_s: float = 0.0,
    ) -> StandinReply:
        """An error in the API's shape; a 429 may carry a RetryInfo delay and/or a
        Retry-After header."""
        error: dict[str, Any] = {
            "code": status,
            "message": message or f"stand-in error {status}",
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if retry_delay_s is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_delay_s}s",
                }
            ]
        headers = {"Retry-After": retry_after_header} if retry_after_header else {}
        return cls.of_json(status, {"error": error}, headers=headers, delay_s=delay_s)

    @classmethod
    def image(
        cls,
        data: bytes,
        mime_type: str = "image/png",
        *,
        text: str | None = None,
        prompt_tokens: int = 800,
        output_tokens: int = 1290,
        finish_reason: str = "STOP",
        model_version: str = "gemini-2.5-flash-image",
    ) -> StandinReply:
        """A 200 whose candidate carries an image as inline data (after `text`, when given),
        as Gemini image models answer."""
        parts: list[dict[str, Any]] = [{"text": text}] if text is not None else []
        parts.append(
            {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode()}}
        )
        payload = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": parts},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": output_tokens,
                "totalTokenCount": prompt_tokens + output_tokens,
            },
            "modelVersion": model_version,
            "responseId": "standin-image",
        }
        return cls.of_json(200, payload)

    @classmethod
    def no_image(cls, finish_reason: str = "IMAGE_SAFETY", text: str | None = None) -> StandinReply:
        """A 200 without an image: only text, or nothing, with `finish_reason`."""
        content: dict[str, Any] = {"role": "model"}
        if text is not None:
            content["parts"] = [{"text": text}]
        payload = {
            "candidates": [{"content": content, "finishReason": finish_reason, "index": 0}],
            "usageMetadata": {"promptTokenCount": 800, "totalTokenCount": 800},
        }
        return cls.of_json(200, payload)

    @classmethod
    def blocked(cls, reason: str = "SAFETY") -> StandinReply:
        """A 200 with no candidates: the prompt itself was blocked."""
        payload = {
            "promptFeedback": {"blockReason": reason},
            "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290},
        }
        return cls.of_json(200, payload)


def sample_png(
    size: tuple[int, int] = (64, 36), colour: tuple[int, int, int] = (40, 90, 160)
) -> bytes:
    """A real PNG, as an image model's answer."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def sample_mp4(seconds: float = 8.0, *, audio: bool = False) -> bytes:
    """The skeleton of an MP4 (ISO BMFF): the file type, a movie header with the duration,
    one video track and an optional sound track, and a small media payload. Enough for what
    reads a clip's duration and tracks; no player would show a picture."""
    timescale = 1000
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3sIIII", 0, b"\0\0\0", 0, 0, timescale, round(seconds * timescale))
        + struct.pack(">IH", 0x00010000, 0x0100)
        + bytes(70)
        + struct.pack(">I", 3),
    )

    def track(handler: bytes) -> bytes:
        hdlr = _box(b"hdlr", bytes(4) + bytes(4) + handler + bytes(12) + b"standin\0")
        return _box(b"trak", _box(b"mdia", hdlr))

    tracks = track(b"vide") + (track(b"soun") if audio else b"")
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")
    return ftyp + _box(b"moov", mvhd + tracks) + _box(b"mdat", b"standin video payload")


@dataclass(frozen=True)
class VideoJob:
    """How one video operation started on the stand-in will go."""

    polls_before_done: int = 1
    """Polls answered "not done" before the one that answers done."""
    video: bytes | None = None
    """The clip's bytes (default: `sample_mp4()`)."""
    mime_type: str = "video/mp4"
    gcs_uri: str | None = None
    """Answer the video as this Cloud Storage uri instead of inline bytes."""
    error: str | None = None
    """Finish with this error (google.rpc.Status) instead of a video."""
    error_code: int = 3
    filtered_reasons: tuple[str, ...] = ()
    """Finish with no video, filtered by the safety filters for these reasons."""

    def done_payload(self, name: str) -> dict[str, Any]:
        if self.error is not None:
            return {
                "name": name,
                "done": True,
                "error": {"code": self.error_code, "message": self.error},
            }
        response: dict[str, Any] = {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
        }
        if self.filtered_reasons:
            response["raiMediaFilteredCount"] = len(self.filtered_reasons)
            response["raiMediaFilteredReasons"] = list(self.filtered_reasons)
        elif self.gcs_uri is not None:
            response["videos"] = [{"gcsUri": self.gcs_uri, "mimeType": self.mime_type}]
        else:
            video = self.video if self.video is not None else sample_mp4()
            response["videos"] = [
                {"bytesBase64Encoded": base64.b64encode(video).decode(), "mimeType": self.mime_type}
            ]
        return {"name": name, "done": True, "response": response}


@dataclass
class StandinOperation:
    name: str
    model: str
    job: VideoJob
    polls: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    model: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    started_at: float
    method: str = GENERATE
    """generateContent, predictLongRunning or fetchPredictOperation."""

    def parts(self) -> list[Mapping[str, Any]]:
        return [part for content in self.body.get("contents", []) for part in content["parts"]]

    def inline_images(self) -> list[tuple[str, bytes]]:
        """(mime type, bytes) of every inline image in the request."""
        images = []
        for part in self.parts():
            data = part.get("inlineData") or part.get("inline_data")
            if data is not None:
                # Proto JSON accepts both spellings, and google-genai sends either.
                mime = data.get("mimeType") or data.get("mime_type")
                images.append((mime, base64.b64decode(data["data"], altchars=b"-_")))
        return images

    def texts(self) -> list[str]:
        return [part["text"] for part in self.parts() if "text" in part]

    @property
    def generation_config(self) -> Mapping[str, Any]:
        config: Mapping[str, Any] = self.body.get("generationConfig", {})
        return config

    @property
    def system_text(self) -> str:
        instruction = self.body.get("systemInstruction", {})
        return "".join(part.get("text", "") for part in instruction.get("parts", []))

    @property
    def instance(self) -> Mapping[str, Any]:
        """A video request's single instance (prompt, image, lastFrame)."""
        instances: list[Mapping[str, Any]] = self.body.get("instances", [{}])
        return instances[0]

    @property
    def parameters(self) -> Mapping[str, Any]:
        """A video request's parameters (durationSeconds, aspectRatio, generateAudio …)."""
        parameters: Mapping[str, Any] = self.body.get("parameters", {})
        return parameters

    def instance_image(self, key: str = "image") -> tuple[str, bytes] | None:
        """(mime type, bytes) of a video request's start image, or of "lastFrame"."""
        image = self.instance.get(key)
        if image is None:
            return None
        return image.get("mimeType"), base64.b64decode(image["bytesBase64Encoded"])


class _Server(ThreadingHTTPServer):
    # A stage task opens its calls at once: the default backlog of 5 drops connections, which
    # the client retries a second later.
    request_queue_size = 128


class GeminiStandin:
    """The server: threaded, on a free loopback port, for one test."""

    def __init__(self, default: StandinReply | None = None) -> None:
        self.default = default or StandinReply.error(500, "the stand-in has no reply scripted")
        """generateContent's reply when its queue is empty."""
        self.default_video_job = VideoJob()
        self.requests: list[RecordedRequest] = []
        self.operations: dict[str, StandinOperation] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._replies: dict[str, deque[StandinReply]] = {
            GENERATE: deque(),
            START_VIDEO: deque(),
            POLL_VIDEO: deque(),
        }
        self._video_jobs: deque[VideoJob] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True  # a reply still sleeping never blocks shutdown
        self._thread = threading.Thread(
            # A short poll keeps shutdown (once per test) from waiting half a second.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="gemini-standin",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def attempts(self) -> int:
        with self._lock:
            return len(self.requests)

    def requests_to(self, method: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def enqueue(self, *replies: StandinReply, method: str = GENERATE) -> None:
        """Replies the next requests to `method` get, in order, before its normal answer."""
        with self._lock:
            self._replies[method].extend(replies)

    def enqueue_video(self, *jobs: VideoJob) -> None:
        """How the next video operations started will go, in order."""
        with self._lock:
            self._video_jobs.extend(jobs)

    def start(self) -> GeminiStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GeminiStandin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next_reply(self, request: RecordedRequest) -> StandinReply:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self._replies[request.method]
            if scripted:
                return scripted.popleft()
            if request.method == START_VIDEO:
                return self._start_operation(request)
            if request.method == POLL_VIDEO:
                return self._poll_operation(request)
            return self.default

    def _start_operation(self, request: RecordedRequest) -> StandinReply:
        job = self._video_jobs.popleft() if self._video_jobs else self.default_video_job
        name = (
            f"projects/standin-project/locations/us-central1/publishers/google/models/"
            f"{request.model}/operations/{uuid.uuid4()}"
        )
        self.operations[name] = StandinOperation(name=name, model=request.model, job=job)
        return StandinReply.of_json(200, {"name": name})

    def _poll_operation(self, request: RecordedRequest) -> StandinReply:
        name = str(request.body.get("operationName", ""))
        operation = self.operations.get(name)
        if operation is None:
            return StandinReply.error(404, f"Operation {name!r} not found")
        operation.polls += 1
        if operation.polls <= operation.job.polls_before_done:
            # Proto JSON leaves out a false `done`, as the API does.
            return StandinReply.of_json(200, {"name": name})
        return StandinReply.of_json(200, operation.job.done_payload(name))

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as against the real API

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                route = _ROUTE.match(path)
                if route is None:
                    self._send(StandinReply.error(404, f"no route for {path}"))
                    return
                body = json.loads(raw or b"{}")
                recorded = RecordedRequest(
                    path=path,
                    model=route["model"],
                    headers={key.lower(): value for key, value in self.headers.items()},
                    body=body,
                    started_at=time.monotonic(),
                    method=route["method"],
                )
                reply = standin._next_reply(recorded)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._send(reply)
                finally:
                    standin._done()

            def _send(self, reply: StandinReply) -> None:
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing left to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output to what the tests say

        return Handler
