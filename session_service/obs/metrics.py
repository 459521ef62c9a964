"""Prometheus metrics (``session_service_`` prefix, base units, ``_total`` counters).

HTTP traffic and operation starts are counted here with prometheus-client.
Operation outcomes and moved points are counted where they happen, in workflows
and activities, through the Temporal SDK's metric meter, which the SDK runtime
exports in Prometheus format next to its own worker metrics; ``/metrics``
serves both.

One label per concept: the SDK's meter already labels what it records with
``namespace``, ``task_queue`` and ``workflow_type`` (workflows) or
``activity_type`` (activities), so the instruments here add only what the SDK
can't know (an operation's ``kind`` and ``status``). A point is counted once
per thing that happened to it: arriving in a collection or a file
(``points_moved_total``) or leaving its source (``points_removed_total``), so a
sum over all activity types never counts a split's points twice.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# names of the SDK-meter instruments (workflows and activities): a module without imports
from session_service.obs.names import INDEX_BUILD as INDEX_BUILD
from session_service.obs.names import OPERATION_DURATION as OPERATION_DURATION
from session_service.obs.names import OPERATIONS_FINISHED as OPERATIONS_FINISHED
from session_service.obs.names import POINTS_MOVED as POINTS_MOVED
from session_service.obs.names import POINTS_REMOVED as POINTS_REMOVED

HTTP_REQUESTS = Counter(
    "session_service_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "session_service_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OPERATIONS_STARTED = Counter(
    "session_service_operations_started_total",
    "Operations started through the API, by kind",
    ["kind"],
)

# An operation runs from a fraction of a second (a small merge) to hours (an export
# or a retention sweep over millions of points): buckets from 10 ms to 6 h, so a
# quantile never lands in +Inf. The SDK runtime applies them (runtime.py).
OPERATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Count and time every request by route template. The label children are cached:
    ``labels()`` takes a lock and builds keys, which the hot counter writes feel."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._record(scope["method"], route_of(scope), status, time.perf_counter() - start)

    def _record(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._requests.get((method, route, status))
        if counter is None:
            counter = self._requests[(method, route, status)] = HTTP_REQUESTS.labels(
                method, route, str(status)
            )
        timer = self._durations.get((method, route))
        if timer is None:
            timer = self._durations[(method, route)] = HTTP_DURATION.labels(method, route)
        counter.inc()
        timer.observe(seconds)


async def render(sdk_endpoint: str | None) -> bytes:
    """Our metrics, then the SDK runtime's (worker, workflow and activity metrics)."""
    body = generate_latest()
    if sdk_endpoint:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                sdk = await client.get(f"http://{sdk_endpoint}/metrics")
            body += b"\n" + sdk.content
        except httpx.HTTPError:
            body += b"\n# the Temporal SDK metrics endpoint did not answer\n"
    return body
