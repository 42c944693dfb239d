"""One bounded retry loop for every google-genai call the providers make.

The client itself is told to make exactly one attempt (see `genai_common.make_client`): its own
retry cannot see a reply that is HTTP 200 but unusable (not JSON, no image), does not honour
the delay a 429 asks for, and would multiply with ours. Here every attempt of one call shares
one budget (`max_attempts`), one exponential backoff with jitter and one per-attempt timeout,
so a call is bounded in attempts and in time.

Three outcomes end the loop early: a usable answer, a refusal that asking again cannot change
(HTTP 4xx other than 408/429, a blocked prompt), and running out of attempts. The last raises
`ProviderUnavailable` when the last failure was the service's (429, 5xx, no answer), because a
later try may well succeed, and a plain `ProviderError` when the service answered and the
answer was unusable every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from google.genai import errors as genai_errors

from shared.pipeline.ports import ProviderError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Timeouts, refused connections and dropped sockets are worth another attempt; which of these
# a transport raises depends on whether google-genai picked aiohttp or httpx. A timeout is told
# apart: the request may have reached the server (aiohttp's timeouts are TimeoutErrors).
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, httpx.TimeoutException)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, httpx.TransportError)
try:
    import aiohttp

    _TRANSPORT_ERRORS = (*_TRANSPORT_ERRORS, aiohttp.ClientError)
except ImportError:  # google-genai falls back to httpx without it
    pass


class ProviderUnavailable(ProviderError):
    """The service kept failing (429, 5xx, no answer) until the retry budget ran out: the
    request itself may be fine, and trying again later may succeed."""


class Unusable(Exception):
    """An answered call whose reply cannot be used; `retryable` when asking again may help
    (malformed JSON), not when the answer would be the same (a safety refusal)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    """Per attempt; also sent to the server as its deadline."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


def backoff_delay(
    retry: int,
    *,
    initial: float,
    maximum: float,
    server_hint: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before retry number `retry` (1 for the first).

    The ceiling doubles each retry up to `maximum`; the delay is the upper half of it at
    random, so callers that failed together come back spread out yet never at once. A delay
    the server asked for is a floor, and `maximum` caps everything.
    """
    ceiling = min(maximum, initial * 2.0 ** (retry - 1))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if server_hint is not None and server_hint > delay:
        delay = server_hint
    return min(delay, maximum)


_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)s?\s*$")


def server_retry_delay(error: genai_errors.APIError) -> float | None:
    """The wait the server asked for: google.rpc.RetryInfo's retryDelay in the error body (how
    the Gemini API answers a 429), else a Retry-After header in seconds."""
    body: Any = error.details
    status = body.get("error", body) if isinstance(body, dict) else None
    entries = status.get("details") if isinstance(status, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and str(entry.get("@type", "")).endswith(".RetryInfo"):
            found = _SECONDS.match(str(entry.get("retryDelay", "")))
            if found:
                return float(found.group(1))
    headers = getattr(error.response, "headers", None)
    if headers is not None:
        found = _SECONDS.match(str(headers.get("retry-after", "")))
        if found:
            return float(found.group(1))
    return None


def retryable_status(code: int | None) -> bool:
    # An APIError without a status is a transport failure the client could not classify.
    return code is None or code in (408, 429) or code >= 500


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    retry_timeouts: bool = True,
    slot: asyncio.Semaphore | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()` until it returns, within the policy's budget.

    `call` raises `Unusable` for an answer it cannot use. `what` names the call in errors and
    logs ("Gemini storyboard"). With `retry_timeouts` off, an attempt that times out is not
    repeated: for a call that starts paid work, a request the server may have accepted must
    not be sent twice.

    `slot`, when given, is held for each attempt but not across the backoff: it bounds calls in
    flight, and a retry that is waiting should not hold back other calls. Waiting for it is not
    part of the attempt's time limit.
    """
    reason = ""
    service_failed = False
    for attempt in range(1, policy.max_attempts + 1):
        server_hint: float | None = None
        try:
            async with slot or contextlib.nullcontext():
                return await asyncio.wait_for(call(), policy.timeout_s)
        except genai_errors.APIError as exc:
            detail = f"HTTP {exc.code} {exc.status or ''}".rstrip()
            if not retryable_status(exc.code):
                raise ProviderError(f"{what}: refused ({detail}): {exc.message}") from exc
            reason = f"{detail}: {exc.message}" if exc.message else detail
            server_hint = server_retry_delay(exc)
            service_failed = True
        except Unusable as exc:
            if not exc.retryable:
                raise ProviderError(f"{what}: {exc.reason}") from exc
            reason = exc.reason
            service_failed = False
        except _TIMEOUTS as exc:
            reason = f"no answer within {policy.timeout_s:g} s"
            if not retry_timeouts:
                raise ProviderUnavailable(
                    f"{what}: {reason}; not repeated, because the request may have been accepted"
                ) from exc
            service_failed = True
        except _TRANSPORT_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            service_failed = True
        if attempt < policy.max_attempts:
            delay = backoff_delay(
                attempt,
                initial=policy.initial_backoff_s,
                maximum=policy.max_backoff_s,
                server_hint=server_hint,
            )
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                attempt,
                policy.max_attempts,
                reason,
                delay,
            )
            await sleep(delay)
    message = f"{what}: no usable answer after {policy.max_attempts} attempts: {reason}"
    raise ProviderUnavailable(message) if service_failed else ProviderError(message)
