"""Heartbeats for activities that don't send their own.

Every activity runs with a heartbeat timeout, so a worker that dies in the
middle of one is noticed within that timeout rather than at its start-to-close
timeout. Long activities heartbeat their checkpoints themselves. The quick ones
(a few SQL statements, dropping a collection) don't. This interceptor
heartbeats for them while they run, and stops as soon as the activity sends a
heartbeat of its own. From then on the activity's own checkpoints are never
overwritten, and a long activity that stalls still times out.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

MIN_INTERVAL = 0.01  # seconds; only reached with test-sized timeouts
MAX_INTERVAL = 10.0  # beat at least this often, whatever the timeout


def heartbeat_interval(timeout: timedelta | None) -> float:
    """A third of the heartbeat timeout: two beats may be lost before it expires."""
    if timeout is None:
        return MAX_INTERVAL
    return max(MIN_INTERVAL, min(MAX_INTERVAL, timeout.total_seconds() / 3))


class _Own(ActivityOutboundInterceptor):
    """Notices the activity's own heartbeats."""

    def __init__(self, next: ActivityOutboundInterceptor, seen: asyncio.Event) -> None:
        super().__init__(next)
        self.seen = seen

    def heartbeat(self, *details: Any) -> None:
        self.seen.set()
        super().heartbeat(*details)


class _Inbound(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.own = asyncio.Event()
        self.outbound = outbound  # ours go straight here, unnoticed by _Own
        super().init(_Own(outbound, self.own))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if not timeout or _is_sync(input):  # all of ours are async; a sync one would own it
            return await super().execute_activity(input)
        beating = asyncio.create_task(self._beat(heartbeat_interval(timeout)))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()

    async def _beat(self, every: float) -> None:
        # A heartbeat replaces the stored details: carry the last attempt's checkpoint,
        # so a retried long activity that hasn't reported yet doesn't lose it.
        details = activity.info().heartbeat_details
        while True:
            try:
                await asyncio.wait_for(self.own.wait(), timeout=every)
            except TimeoutError:
                pass
            if self.own.is_set():
                return  # the activity heartbeats itself from now on
            self.outbound.heartbeat(*details)


def _is_sync(input: ExecuteActivityInput) -> bool:
    """As the SDK decides: a coroutine function, or an object whose ``__call__`` is one."""
    fn = input.fn
    return not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__))


class AutoHeartbeat(Interceptor):
    """Heartbeats for activities that don't, until they do."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)
