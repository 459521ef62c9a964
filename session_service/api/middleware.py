"""Pure ASGI middleware: request hygiene and error media type (section F), API keys
(section E) and the request body limit (section F)."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from session_service.api.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE, accepts_problem_json
from session_service.obs import logs


async def _send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + str(status),
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


SINGLE_HEADERS = frozenset(
    {b"content-type", b"content-length", b"authorization", b"x-user-id", b"idempotency-key"}
)


def _malformed(scope: Scope) -> tuple[int, str] | None:
    """(status, detail) for a request that layers behind would read differently (a repeated
    header: some take the first, some the last) or could not store (NUL), else None."""
    seen: set[bytes] = set()
    for name, value in scope["headers"]:
        if name in SINGLE_HEADERS:
            if name in seen:
                return 400, f"send one {name.decode()} header, not several"
            seen.add(name)
            if name == b"content-type" and not value.isascii():
                return 400, "the content-type header must be ASCII"
        if b"\x00" in value:
            return 400, f"the {name.decode('latin-1')} header holds a NUL character"
    if "\x00" in scope["path"]:
        return 422, "the path holds a NUL character (%00)"
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return 422, "the query string holds a NUL character (%00)"
    return None


class EdgeMiddleware:
    """The first thing a request meets: refuses what ``_malformed`` finds, and gives error
    bodies ``application/json`` unless ``Accept`` names ``application/problem+json`` (the
    platform's gateway re-encodes only ``application/json`` and breaks on other types)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not accepts_problem_json(scope["headers"]):
            send = _plain_json_errors(send)
        refusal = _malformed(scope)
        if refusal is not None:
            status, detail = refusal
            title = "Bad Request" if status == 400 else "Unprocessable Content"
            await _send_problem(send, status, title, detail)
            return
        await self.app(scope, receive, send)


def _plain_json_errors(send: Send) -> Send:
    async def relabelled(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (k, b"application/json") if k == b"content-type" and v == PROBLEM_JSON else (k, v)
                for k, v in message.get("headers", [])
            ]
        await send(message)

    return relabelled


class ApiKeyMiddleware:
    """When keys are configured, every request but the ``open_paths`` (probes, metrics)
    needs ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, keys: Collection[str], open_paths: Collection[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = set(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and any(
            hmac.compare_digest(token.strip(), k) for k in self.keys
        ):
            await self.app(scope, receive, send)
            return
        detail = (
            "missing Authorization header: send 'Authorization: Bearer <api key>'"
            if not auth
            else "the API key is not valid"
        )
        await _send_problem(
            send,
            401,
            "Unauthorized",
            detail,
            [(b"www-authenticate", b'Bearer realm="session-service"')],
        )


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(
        self, app: ASGIApp, limit: int, exempt: Callable[[Scope], bool] = lambda _: False
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than the {self.limit}-byte limit"
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.limit:
                await _send_problem(send, 413, "Content Too Large", detail)
                return
            if b"transfer-encoding" not in headers:
                # the HTTP server delivers no more than Content-Length: nothing to watch
                # (with Transfer-Encoding too, chunked wins, so the body is watched)
                await self.app(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_problem(send, 413, "Content Too Large", detail)


class _TooLarge(BaseException):  # noqa: N818 - passes through FastAPI's body parser untouched
    pass


QUIET_SUFFIXES = ("/stats", "/model-usage")
# Probes and scrapes arrive every few seconds from every orchestrator and Prometheus:
# not logged (their metrics still count them).
UNLOGGED_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
_LOGGED_PARAMS = ("session_id", "operation_id", "export_id")
SLOW_SECONDS = 1.0


def _routine(scope: Scope, status: int, seconds: float) -> bool:
    """A fast, successful counter write: the processing services send these by the
    thousand, so they are logged at DEBUG (the HTTP metrics still count them)."""
    return (
        scope["method"] == "PUT"
        and status < 400
        and seconds < SLOW_SECONDS
        and scope["path"].endswith(QUIET_SUFFIXES)
    )


class RequestContextMiddleware:
    """Honour or make an ``X-Request-Id``, put it (and the session id of the path) on every
    log line written while the request runs, return it, and log the request once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logs.get("session_service.http")
        self.stdlib = logging.getLogger("session_service.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
        ok = 0 < len(given) <= 128 and given.isprintable()
        request_id = given if ok else os.urandom(16).hex()
        start = time.perf_counter()
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        tokens = logs.bind(request_id=request_id)
        try:
            await self.app(scope, receive, tagged)
        finally:
            self._log(scope, status, time.perf_counter() - start)
            logs.unbind(**tokens)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        if scope["path"] in UNLOGGED_PATHS:
            return
        level = logging.DEBUG if _routine(scope, status, seconds) else logging.INFO
        if not self.stdlib.isEnabledFor(level):  # before structlog renders anything
            return
        params = scope.get("path_params") or {}
        extra = {k: v for k, v in params.items() if k in _LOGGED_PARAMS}
        self.log.log(
            level,
            "request",
            method=scope["method"],
            path=scope["path"],
            status=status,
            duration_ms=round(seconds * 1000, 1),
            **extra,
        )
