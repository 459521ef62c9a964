"""When and how the client retries: tenacity, shared by the sync and async clients.

Only calls that are safe to repeat are retried: reads, PUT and DELETE (they
set a state, so twice is once), and POSTs that carry an ``Idempotency-Key``
(the service answers a repeat with the same operation). A POST without a key
could start the work twice and is never retried. What is retried: no answer
at all (connection refused or reset, timeouts) and 429/502/503/504. The pause
is a jittered exponential backoff ("full jitter"), unless the answer said how
long to wait (``Retry-After``), which is then honoured (up to a cap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from session_service.client.errors import ApiError, ConnectionFailed

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def retriable_error(exc: BaseException) -> bool:
    """No answer, or an answer that says "try again later"."""
    if isinstance(exc, ConnectionFailed):
        return True
    return isinstance(exc, ApiError) and exc.status in RETRY_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: no retry); pauses of ``initial`` x 2^n seconds at most
    ``maximum``, drawn at random below that bound; a ``Retry-After`` is honoured up to
    ``max_retry_after``. ``sleep`` replaces the pause (tests record it instead)."""

    attempts: int = 4
    initial: float = 0.2
    maximum: float = 10.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] | None = None

    def pause(self, state: RetryCallState) -> float:
        """The pause before the next attempt (tenacity's ``wait``)."""
        exc = state.outcome.exception() if state.outcome is not None else None
        after = exc.retry_after if isinstance(exc, ApiError) else None
        if after is not None:
            return min(after, self.max_retry_after)
        backoff: float = wait_random_exponential(multiplier=self.initial, max=self.maximum)(state)
        return backoff

    def _common(self, retry: bool) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.attempts if retry else 1),
            "wait": self.pause,
            "retry": retry_if_exception(retriable_error),
            "reraise": True,
        }

    def sync(self, retry: bool) -> Retrying:
        """A tenacity ``Retrying`` for one call of the sync client."""
        return Retrying(sleep=self.sleep or time.sleep, **self._common(retry))

    def asynchronous(self, retry: bool) -> AsyncRetrying:
        """A tenacity ``AsyncRetrying`` for one call of the async client."""
        fake = self.sleep

        async def sleep(seconds: float) -> None:
            if fake is not None:
                fake(seconds)
            else:
                await asyncio.sleep(seconds)

        return AsyncRetrying(sleep=sleep, **self._common(retry))
