"""Concurrent counter increments of one session, summed into one UPDATE.

The processing services bump the same session's counters from many workers at
once. One UPDATE per request makes every request wait in that row's lock queue
(the API benchmark: Postgres alone could not reach the in-memory design's
throughput). Instead, at most one increment UPDATE per session is in flight in
this process; what arrives meanwhile is summed into the next one.

Nothing is acknowledged before it is durable: each caller returns only once
the UPDATE that carries its increment has committed, and gets its error if
that UPDATE fails. ``version`` still goes up once per request (the repository
is told how many requests an UPDATE carries), so ETags count every change.
A batch refused for its merged metadata size is re-run request by request, so
one caller's oversized metadata fails only that caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from session_service.domain.errors import Unavailable, Unprocessable

STOPPED = (
    "the service stopped before confirming this increment; it may or may not have been "
    "applied (its UPDATE was cancelled in flight)"
)

# (session id, summed deltas, merged metadata or None, requests carried)
Increment = Callable[[str, dict[str, int], "dict[str, Any] | None", int], Awaitable[None]]


@dataclass
class _Request:
    deltas: dict[str, int]
    metadata: dict[str, Any] | None
    done: asyncio.Future[None]


@dataclass
class _Batch:
    requests: list[_Request] = field(default_factory=list)

    def summed(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        deltas: Counter[str] = Counter()
        metadata: dict[str, Any] = {}
        for r in self.requests:
            deltas.update(r.deltas)
            metadata.update(r.metadata or {})  # top-level keys, in arrival order, like jsonb ||
        return dict(deltas), metadata or None


def _own(error: BaseException) -> BaseException:
    """A copy per caller: one instance raised in many tasks would gather every task's
    frames in its traceback, and a logged 500 would show them all."""
    try:
        mine = copy.copy(error)
    except Exception:  # an exception that can't be copied: share it
        return error
    mine.__cause__, mine.__context__ = error.__cause__, error.__context__
    return mine


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(_own(error))
        # a caller that went away (client disconnected) must not leave the error unretrieved
        future.add_done_callback(lambda f: f.exception())


class StatsCoalescer:
    """One in-flight increment per session; later arrivals wait for the next, summed."""

    def __init__(self, increment: Increment) -> None:
        self._increment = increment
        self._pending: dict[str, _Batch] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}

    async def add(
        self, session_id: str, deltas: dict[str, int], metadata: dict[str, Any] | None
    ) -> None:
        """Return once an UPDATE carrying this increment has committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(session_id, _Batch()).requests.append(
            _Request(deltas, metadata, done)
        )
        task = self._draining.get(session_id)
        if task is None or task.done():
            # a context of its own: the UPDATE serves many requests, not the first one's id
            self._draining[session_id] = asyncio.create_task(
                self._drain(session_id), context=contextvars.Context()
            )
        # shielded: a caller that disconnects doesn't cancel the UPDATE others wait on
        await asyncio.shield(done)

    async def _drain(self, session_id: str) -> None:
        batch: _Batch | None = None
        try:
            while (batch := self._pending.pop(session_id, None)) is not None:
                await self._run(session_id, batch)
        finally:
            if self._draining.get(session_id) is asyncio.current_task():
                del self._draining[session_id]
            # cancelled (shutting down): nobody may wait forever for an UPDATE that won't come
            left = [
                *(batch.requests if batch else []),
                *self._pending.pop(session_id, _Batch()).requests,
            ]
            for r in left:
                _settle(r.done, Unavailable(STOPPED))

    async def _run(self, session_id: str, batch: _Batch) -> None:
        deltas, metadata = batch.summed()
        try:
            await self._increment(session_id, deltas, metadata, len(batch.requests))
        except Unprocessable as exc:
            if len(batch.requests) == 1:
                _settle(batch.requests[0].done, exc)
                return
            for r in batch.requests:  # find whose metadata is too large; the rest still count
                await self._run(session_id, _Batch([r]))
        except Exception as exc:  # not found, locked, database down: the same for all
            for r in batch.requests:
                _settle(r.done, exc)
        else:
            for r in batch.requests:
                _settle(r.done, None)
