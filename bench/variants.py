"""Diagnostics of bench.api: the service's own FastAPI app, served with parts changed.

``python -m bench.variants --port P [--tuned] [--no-request-log]
(--stub | --dsn D --temporal A --data-dir Q)``

* ``--stub``: ``create_app`` from ``session_service.api.app`` (all routes, both
  middlewares, the problem handlers, the same dependencies) with a stub runtime
  whose ``add_stats`` keeps the counters in a dict: what the service's HTTP
  layer costs by itself. Counters are read at ``GET /bench-stub/sessions/{id}``.
* ``--dsn/--temporal/--data-dir``: the real runtime (Postgres, Temporal, a
  Qdrant local dir of its own) on the database of a running ``session-service dev``.
* ``--tuned``: the changes bench.api's report suggests, made from the outside:
  the route's two dependencies (``get_sessions``, ``get_actor``) as ``async def``
  (FastAPI runs a plain ``def`` dependency in the thread pool, one hop each),
  ``PUT /sessions/{id}/stats`` matched first (this FastAPI walks included routers
  route by route), the objects of start-up frozen out of the garbage collector
  (``gc.freeze()``: a full collection otherwise walks the ~160,000 objects of
  FastAPI, Temporal and Qdrant's clients and stalls every request for tens of
  ms), and - with the real runtime - concurrent increments of one session
  coalesced into one UPDATE (see ``CoalescingSessions``).
* ``--no-request-log``: without the two observability middlewares (the request
  log line and the Prometheus HTTP metrics), to show what they cost per request.

Since commit 2023372 the service itself has every change ``--tuned`` makes
(async dependencies, the counter routes first, ``gc.freeze()``, coalesced
increments in ``session_service/coalescing.py``); ``--tuned`` is kept so the
diagnostic rows of BENCHMARKS.md can still be reproduced.

Served like ``session-service dev`` serves the API: its logging set up the same
way (console lines, one per request), one uvicorn worker, default loop, no
access log, and - with the real runtime - the Temporal worker in the same loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Request

from session_service import logs
from session_service.access import Actor
from session_service.models import Message, Permission, StatsUpdate
from session_service.sessions import SessionService
from session_service.settings import Settings

if TYPE_CHECKING:
    from session_service.runtime import Runtime

STATS_PATH = "/sessions/{session_id}/stats"


# the stub runtime


class StubSessions:
    """``SessionService.add_stats`` for a trusted caller, minus the UPDATE."""

    def __init__(self) -> None:
        self.stats: defaultdict[str, Counter[str]] = defaultdict(Counter)

    async def add_stats(self, actor: Actor, session_id: str, body: StatsUpdate) -> None:
        deltas = body.model_dump(exclude={"metadata"}, exclude_none=True)
        self.stats[session_id].update(deltas)


class _Ok:
    """Answers every health probe (``ping``, ``check_health``) at once."""

    async def ping(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    @property
    def service_client(self) -> _Ok:
        return self


class StubRuntime:
    def __init__(self) -> None:
        self.sessions = StubSessions()
        self.repo = self.vectors = self.temporal = _Ok()

    async def close(self) -> None:
        return None


# the tuning


async def async_sessions(request: Request) -> Any:
    return request.app.state.runtime.sessions


async def async_actor(x_user_id: Annotated[str | None, Header()] = None) -> Actor:
    from session_service.api import deps

    return await deps.get_actor(x_user_id)


def use_async_dependencies() -> None:
    """Rebind the ``Annotated`` aliases the routes import to ``async def`` twins.

    ``dependency_overrides`` would not do: FastAPI re-analyses an overridden
    dependency on every request, which costs more than the thread-pool hop.
    """
    from session_service.api import deps

    if "session_service.api.routes.sessions" in sys.modules:
        raise RuntimeError("use_async_dependencies() must run before the routes are imported")
    deps.Sessions = Annotated[SessionService, Depends(async_sessions)]  # type: ignore[assignment]
    deps.CurrentActor = Annotated[Actor, Depends(async_actor)]  # type: ignore[assignment]


def stats_route_first(app: FastAPI) -> None:
    """Put ``PUT /sessions/{id}/stats`` ahead of every included router."""
    from session_service.api.routes.counters import put_stats

    router = APIRouter()
    router.add_api_route(STATS_PATH, put_stats, methods=["PUT"], response_model=Message)
    app.include_router(router)
    app.router.routes.insert(0, app.router.routes.pop())


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Batch:
    deltas: Counter[str] = field(default_factory=Counter)
    metadata: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CoalescingSessions(SessionService):
    """At most one stats UPDATE in flight per session; what arrives meanwhile is summed.

    Each caller still returns only once the UPDATE holding its increment has
    committed (or gets its error), so nothing is acknowledged before it is
    durable. A prototype: ``version`` goes up once per UPDATE, not per request.
    """

    def __init__(self, base: SessionService) -> None:
        super().__init__(base.repo, base.vectors)
        self._pending: dict[str, _Batch] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}

    async def add_stats(self, actor: Actor, session_id: str, body: StatsUpdate) -> None:
        if not actor.trusted:
            await self.load(actor, session_id, Permission.write)
        batch = self._pending.setdefault(session_id, _Batch())
        batch.deltas.update(body.model_dump(exclude={"metadata"}, exclude_none=True))
        batch.metadata.update(body.metadata or {})
        if session_id not in self._draining:
            self._draining[session_id] = asyncio.create_task(self._drain(session_id))
        await asyncio.shield(batch.done)

    async def _drain(self, session_id: str) -> None:
        try:
            while (batch := self._pending.pop(session_id, None)) is not None:
                try:
                    await self.repo.increment_stats(
                        session_id, dict(batch.deltas), batch.metadata or None
                    )
                except Exception as exc:  # every caller of the batch gets it
                    batch.done.set_exception(exc)
                else:
                    batch.done.set_result(None)
        finally:
            del self._draining[session_id]


# the app


async def open_runtime(args: argparse.Namespace) -> Runtime | StubRuntime:
    if args.stub:
        return StubRuntime()
    from session_service.runtime import Runtime

    settings = Settings(
        database_url=args.dsn, temporal_address=args.temporal, data_dir=Path(args.data_dir)
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    if args.tuned:
        runtime.sessions = CoalescingSessions(runtime.sessions)
    return runtime


OBSERVABILITY = ("RequestContextMiddleware", "MetricsMiddleware")


def without_observability(app: FastAPI) -> None:
    """Drop the per-request log line and HTTP metrics middlewares (before the first request)."""
    app.user_middleware = [
        m for m in app.user_middleware if getattr(m.cls, "__name__", "") not in OBSERVABILITY
    ]


def build(runtime: Runtime | StubRuntime, tuned: bool) -> FastAPI:
    if tuned:
        use_async_dependencies()
    from session_service.api.app import create_app

    app = create_app(Settings(), cast("Runtime", runtime))
    if tuned:
        stats_route_first(app)
    if isinstance(runtime, StubRuntime):
        stub = runtime.sessions

        @app.get("/bench-stub/sessions/{session_id}")
        async def counters(session_id: str) -> dict[str, Any]:
            return {"processing_stats": dict(stub.stats[session_id])}

    return app


async def serve(args: argparse.Namespace) -> None:
    runtime = await open_runtime(args)
    try:
        app = build(runtime, args.tuned)
        if args.no_request_log:
            without_observability(app)
        if args.tuned:
            gc.collect()
            gc.freeze()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            access_log=False,
            lifespan="on",
            log_config=None,
        )
        server = uvicorn.Server(config)
        if isinstance(runtime, StubRuntime):
            await server.serve()
            return
        from session_service.worker import worker_for

        async with await worker_for(runtime):
            await server.serve()
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--no-request-log", action="store_true")
    parser.add_argument("--stub", action="store_true", help="no database: counters in a dict")
    parser.add_argument("--dsn", help="Postgres of a running session-service dev")
    parser.add_argument("--temporal", help="its Temporal address")
    parser.add_argument("--data-dir", help="a dir for this process's Qdrant local mode")
    args = parser.parse_args()
    if not args.stub and not (args.dsn and args.temporal and args.data_dir):
        parser.error("give --stub, or --dsn, --temporal and --data-dir")
    logs.configure(json_logs=False, level=Settings().log_level)  # as `session-service dev`
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
