"""Provider calls of one stage task, made concurrently in one event loop.

A stage's scenes call their models at once, up to a bound (FRAMEFORK_PIPELINE__CONCURRENCY,
and a provider's own `max_concurrency`); the blocking Firestore and Storage calls around them
run in threads (asyncio.to_thread) so that they do not hold the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from shared.pipeline.ports import ProviderError

T = TypeVar("T")


class ProviderCalls:
    """At most `limit` calls at once, and one per digest: a second scene with the same inputs
    waits for the first one's result instead of paying for another call."""

    def __init__(self, limit: int) -> None:
        self._bound = asyncio.Semaphore(limit)
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def once(self, key: str, make: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result of make() for this key, and whether another caller made it."""
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key]), True
        made = asyncio.ensure_future(self._bounded(make))
        self._inflight[key] = made
        return await made, False

    async def _bounded(self, make: Callable[[], Awaitable[T]]) -> T:
        async with self._bound:
            return await make()


async def all_of(work: Iterable[Awaitable[None]]) -> None:
    """Runs all to the end (what finishes is kept even when another fails), then raises: the
    provider failure of the lowest scene if there is one (it fails the stage, naming it), else
    the first other error (a crash, retried by redelivery)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    refusals = [e for e in errors if isinstance(e, ProviderError)]
    if refusals:
        raise min(refusals, key=lambda e: e.scene if e.scene is not None else -1)
    if errors:
        raise errors[0]


async def close_provider(provider: object) -> None:
    """Closes a provider's client in the loop that opened it (google-genai's async client is
    bound to its event loop); the next stage task's loop opens its own."""
    close = getattr(provider, "aclose", None)
    if close is not None:
        await close()
