"""Probes: ``/health/live`` (the process serves), ``/health/ready`` (everything an
operation needs answers, a worker included), and the older deep ``/health``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import State
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from session_service import __version__
from session_service.api.deps import RuntimeDep
from session_service.api.openapi import errors
from session_service.api.problems import problem
from session_service.domain.models import HealthStatus
from session_service.obs.metrics import CONTENT_TYPE, render
from session_service.services.runtime import Runtime

router = APIRouter(tags=["health"])

PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
CHECK_TIMEOUT_SECONDS = 2.0  # a hung dependency answers 503 after this, not a hung probe
RETRY_AFTER_SECONDS = 5
# An idle worker's long poll lasts up to a minute before it polls again, and the server
# keeps listing a poller for minutes after it went away: seen within this, it counts.
POLLER_SEEN_WITHIN = timedelta(seconds=90)
# Probes are open and cost five backend calls: concurrent probes share one run of the
# checks, and a finished run answers the probes of the next second too.
READY_REUSED_FOR_SECONDS = 1.0


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of the service and of the Temporal SDK in this process."""
    return Response(await render(runtime.sdk_metrics), media_type=CONTENT_TYPE)


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_SECONDS)
        return "ok"
    except TimeoutError:
        return f"error: no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return f"error: {type(exc).__name__}: {exc}"[:300]


@router.get("/health", response_model=HealthStatus, responses={503: {"model": HealthStatus}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    """200 only when Postgres, Temporal and Qdrant all answer; each is reported."""
    results = await asyncio.gather(
        _check(runtime.pg.ping()),
        _check(runtime.temporal.service_client.check_health()),
        _check(runtime.vectors.ping()),
    )
    checks = dict(zip(("postgres", "temporal", "qdrant"), results, strict=True))
    ok = all(v == "ok" for v in checks.values())
    body = HealthStatus(status="healthy" if ok else "unhealthy", version=__version__, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 while the process serves requests; touches no dependency (a liveness probe
    must not restart the API because Postgres is slow)."""
    return {"status": "alive", "service": "session", "version": __version__}


async def _workers_polling(runtime: Runtime) -> None:
    """At least one worker polls the task queue for workflow tasks and for activity tasks
    (an operation needs both), seen within ``POLLER_SEEN_WITHIN``."""
    settings = runtime.settings
    queue = TaskQueue(name=settings.temporal_task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL)
    kinds = {
        "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    }
    answers = await asyncio.gather(
        *(
            runtime.temporal.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=settings.temporal_namespace, task_queue=queue, task_queue_type=kind
                ),
                timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS),
            )
            for kind in kinds.values()
        )
    )
    now = datetime.now(UTC)
    idle = [
        name
        for name, answer in zip(kinds, answers, strict=True)
        if not any(
            now - p.last_access_time.ToDatetime(UTC) <= POLLER_SEEN_WITHIN for p in answer.pollers
        )
    ]
    if idle:
        raise LookupError(
            f"no worker polls the {' or '.join(idle)} tasks of task queue "
            f"'{settings.temporal_task_queue}'"
        )


async def _run_readiness(runtime: Runtime) -> dict[str, str]:
    results = await asyncio.gather(
        _check(runtime.pg.ping()),
        _check(runtime.temporal.service_client.check_health()),
        _check(runtime.vectors.ping()),
        _check(_workers_polling(runtime)),
    )
    return dict(zip(("postgres", "temporal", "vectors", "workers"), results, strict=True))


async def _readiness(runtime: Runtime, state: State) -> dict[str, str]:
    """The checks of a run in flight or finished within ``READY_REUSED_FOR_SECONDS``,
    else of a new run (shielded: a probe that gives up doesn't cancel the others' run)."""
    now = asyncio.get_running_loop().time()
    last: tuple[float, asyncio.Future[dict[str, str]]] | None = getattr(state, "readiness", None)
    if last is not None:
        started, run = last
        if not run.done() or now - started < READY_REUSED_FOR_SECONDS:
            return await asyncio.shield(run)
    run = asyncio.ensure_future(_run_readiness(runtime))
    state.readiness = (now, run)
    return await asyncio.shield(run)


@router.get(
    "/health/ready",
    responses=errors(503),
)
async def ready(runtime: RuntimeDep, request: Request) -> JSONResponse:
    """200 when Postgres, Temporal and the vector store answer and a worker polls the task
    queue; otherwise 503 with ``Retry-After``, naming what failed."""
    checks = await _readiness(runtime, request.app.state)
    failed = [name for name, result in checks.items() if result != "ok"]
    if not failed:
        body = {"status": "ready", "service": "session", "version": __version__, "checks": checks}
        return JSONResponse(body)
    return problem(
        503,
        "not ready: " + "; ".join(f"{name} {checks[name]}" for name in failed),
        type_suffix="not-ready",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        failed=failed,
        checks=checks,
    )
