"""A local server that answers like the Gemini API's generateContent, scripted per test.

The real google-genai client is pointed at it through its base_url, so tests exercise the
client's own request building, error mapping and response parsing without reaching Google.
Replies are served from a queue (then a default), each optionally after a delay; every
request is recorded, and the number of requests in flight at once is tracked.

    with GeminiStandin() as standin:
        standin.enqueue(StandinReply.error(429, retry_delay_s=0.01), StandinReply.ok({...}))
        client = genai.Client(api_key="k", http_options={"base_url": standin.base_url})
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

_ROUTE = re.compile(r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):generateContent$")

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
    def blocked(cls, reason: str = "SAFETY") -> StandinReply:
        """A 200 with no candidates: the prompt itself was blocked."""
        payload = {
            "promptFeedback": {"blockReason": reason},
            "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290},
        }
        return cls.of_json(200, payload)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    model: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    started_at: float

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


class GeminiStandin:
    """The server: threaded, on a free loopback port, for one test."""

    def __init__(self, default: StandinReply | None = None) -> None:
        self.default = default or StandinReply.error(500, "the stand-in has no reply scripted")
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._replies: deque[StandinReply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
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

    def enqueue(self, *replies: StandinReply) -> None:
        with self._lock:
            self._replies.extend(replies)

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
            return self._replies.popleft() if self._replies else self.default

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
