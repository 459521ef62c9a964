"""Liveness and readiness of the service and each part it needs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from session_service import __version__
from session_service.api.deps import RuntimeDep
from session_service.metrics import CONTENT_TYPE, render
from session_service.models import HealthStatus

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of the service and of the Temporal SDK in this process."""
    return Response(await render(runtime.sdk_metrics), media_type=CONTENT_TYPE)


@router.get("/health", response_model=HealthStatus, responses={503: {"model": HealthStatus}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    """200 only when Postgres, Temporal and Qdrant all answer; each is reported."""

    async def check(name: str, probe: asyncio.Future[object] | object) -> tuple[str, str]:
        try:
            await asyncio.wait_for(probe, timeout=3)  # type: ignore[arg-type]
            return name, "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            return name, f"error: {type(exc).__name__}: {exc}"[:300]

    results = await asyncio.gather(
        check("postgres", runtime.repo.ping()),
        check("temporal", runtime.temporal.service_client.check_health()),
        check("qdrant", runtime.vectors.ping()),
    )
    checks = dict(results)
    ok = all(v == "ok" for v in checks.values())
    body = HealthStatus(status="healthy" if ok else "unhealthy", version=__version__, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
