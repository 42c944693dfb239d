"""The model service's `faces` API over HTTP, for the identity check of keyframes.

In Google Cloud the model service admits only callers with roles/run.invoker, which prove who
they are with a Google ID token whose audience is the service's URL (Cloud Run
service-to-service auth). The runtime's own service account mints it through the metadata
server; it lives an hour, so one token serves every call until shortly before it expires, in
every event loop of the process. Locally the service takes plain requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from shared.settings import IdentitySettings

log = logging.getLogger(__name__)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
TOKEN_MARGIN_S = 300.0
"""A token is replaced this long before it expires: a call that starts with it must not
arrive with an expired one."""


@dataclass(frozen=True)
class FoundFace:
    embedding: list[float]
    model: str
    confidence: float


class FacesUnavailable(Exception):
    """The model service could not answer (down, refusing us, or answering nonsense)."""


class FaceFinder(Protocol):
    async def faces(self, image: bytes, content_type: str) -> list[FoundFace]:
        """Every face in the image, each with its embedding and the model that made it."""

    async def aclose(self) -> None: ...


def _fetch_id_token(audience: str) -> str:
    import google.auth.transport.requests
    from google.oauth2 import id_token

    token: str = id_token.fetch_id_token(  # type: ignore[no-untyped-call]
        google.auth.transport.requests.Request(), audience
    )
    return token


def _expiry(token: str) -> float:
    from google.auth import jwt

    claims: dict[str, Any] = jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
    return float(claims["exp"])


class IdTokens:
    """One ID token for an audience, fetched again shortly before it expires. Thread-safe:
    the chunks' event loops of one instance share it."""

    def __init__(
        self, audience: str, *, fetch: Callable[[str], str] = _fetch_id_token,
        expiry: Callable[[str], float] = _expiry, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._audience = audience
        self._fetch, self._expiry, self._clock = fetch, expiry, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - TOKEN_MARGIN_S:
                self._token = self._fetch(self._audience)
                self._expires_at = self._expiry(self._token)
            return self._token


class ModelServiceFaces:
    """One client per event loop (httpx's async client is bound to the loop that opened it);
    retries connection errors, 429 and 5xx with backoff."""

    def __init__(self, settings: IdentitySettings, tokens: IdTokens | None) -> None:
        if not settings.model_service_url:
            raise ValueError("no model service URL is configured")
        self._settings = settings
        self._tokens = tokens
        self._client = httpx.AsyncClient(
            base_url=settings.model_service_url.rstrip("/"), timeout=settings.timeout_s
        )

    async def faces(self, image: bytes, content_type: str) -> list[FoundFace]:
        problem = "no answer"
        for attempt in range(self._settings.attempts):
            if attempt:
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
            try:
                headers = {}
                if self._tokens is not None:
                    token = await asyncio.to_thread(self._tokens.token)
                    headers["Authorization"] = f"Bearer {token}"
                answer = await self._client.post(
                    "/faces", files={"image": ("keyframe", image, content_type)}, headers=headers
                )
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            except Exception as error:  # the metadata server refusing a token, for one
                raise FacesUnavailable(f"no ID token for the model service: {error}") from error
            if answer.status_code in RETRIED_STATUSES:
                problem = f"HTTP {answer.status_code}"
                continue
            if answer.status_code != 200:
                # 401/403: this identity may not invoke it; retrying will not change that.
                raise FacesUnavailable(f"the model service answered HTTP {answer.status_code}")
            try:
                return [
                    FoundFace(embedding=[float(v) for v in f["embedding"]], model=str(f["model"]),
                              confidence=float(f["confidence"]))
                    for f in answer.json()
                ]  # fmt: skip
            except (ValueError, KeyError, TypeError) as error:
                raise FacesUnavailable(f"the model service answered nonsense: {error}") from error
        log.warning("model service faces unavailable after %d tries: %s",
                    self._settings.attempts, problem)  # fmt: skip
        raise FacesUnavailable(f"the model service is unavailable ({problem})")

    async def aclose(self) -> None:
        await self._client.aclose()
