"""The FastAPI application factory: clients opened in the lifespan, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from session_service import __version__
from session_service.api import openapi, problems
from session_service.api.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    EdgeMiddleware,
    RequestContextMiddleware,
)
from session_service.api.routes import (
    cold,
    compare,
    counters,
    exports,
    health,
    operations,
    points,
    policy,
    sessions,
)
from session_service.obs.metrics import MetricsMiddleware
from session_service.obs.tracing import from_environment as tracing_from_environment
from session_service.services.runtime import Runtime
from session_service.settings import Settings


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. With ``runtime`` given (tests, ``dev``) the caller owns its clients."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        owned = await Runtime.open(settings)
        app.state.runtime = owned
        try:
            yield
        finally:
            await owned.close()

    app = FastAPI(
        title="Session service",
        version=__version__,
        description="Sessions of the Tab Organizer platform: metadata in Postgres, "
        "vectors in Qdrant, long operations as Temporal workflows.",
        lifespan=lifespan,
        docs_url=None,  # served by api.openapi from the packaged viewers, not a CDN
        redoc_url=None,
    )
    if runtime is not None:
        app.state.runtime = runtime
    problems.install(app)
    open_paths = frozenset({*health.PROBE_PATHS, "/metrics"})
    openapi.install(app, open_paths)
    counters.install(app)  # the hot writes, matched first
    app.include_router(health.router)
    # Static /sessions/... paths first, so that /sessions/{id} does not shadow them.
    app.include_router(policy.router)
    app.include_router(compare.router)
    app.include_router(operations.router)
    app.include_router(exports.router)
    app.include_router(cold.router)  # /sessions/offloaded before /sessions/{id}
    app.include_router(sessions.router)
    app.include_router(points.router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, exempt=exports.is_upload)
    app.add_middleware(
        ApiKeyMiddleware, keys=settings.api_keys, open_paths=open_paths | openapi.OPEN_PATHS
    )
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    traced = runtime.tracing if runtime is not None else tracing_from_environment()
    if traced is not None:  # outermost: the request's span is current in every layer
        traced.instrument(app)
    return app
