"""Cold sessions (API.md section G): offload and reload by hand, the operator's listing,
and the first use that brings an offloaded session back before a request needs it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from session_service.api.deps import CurrentActor, IdempotencyKey, RuntimeDep
from session_service.api.openapi import errors
from session_service.api.prefer import awaited, parse_prefer, respond
from session_service.domain.access import Actor
from session_service.domain.errors import Offloaded, Unprocessable
from session_service.domain.models import MAX_PAGE
from session_service.services.runtime import Runtime

router = APIRouter(tags=["cold sessions"])
PreferHeader = Annotated[str | None, Header(description="respond-async, or wait=N")]
T = TypeVar("T")


async def first_use(
    runtime: Runtime,
    actor: Actor,
    session_id: str,
    prefer: str | None,
    call: Callable[[], Awaitable[T]],
) -> T | JSONResponse:
    """Answer ``call()``; if it needs the points of an offloaded session, start or join the
    session's reload, wait for it like any long-running request (section B: up to
    ``SYNC_WAIT_SECONDS`` or ``Prefer: wait``; 202 with the reload after that, or the
    error its failure deserves), then answer ``call()``. Live sessions pay nothing."""
    try:
        return await call()
    except Offloaded:
        pass
    wait, applied = parse_prefer(prefer, runtime.settings.sync_wait_seconds)
    deadline = time.monotonic() + wait
    started = await runtime.cold.reload_for_use(actor, session_id, wait)
    if started is not None:
        answer = await awaited(runtime.operations, started, deadline - time.monotonic(), applied)
        if answer is not None:
            return answer
    return await call()  # offloaded again meanwhile: 409 (Offloaded) names the way out


@router.get("/sessions/offloaded")
async def list_offloaded(
    runtime: RuntimeDep,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Offloaded sessions the caller can read, in id order, with their artifacts' sizes;
    ``after``: the last ``session_id`` of the previous page."""
    if after is not None:
        try:
            after = str(uuid.UUID(after))
        except ValueError:
            raise Unprocessable(
                "after must be a session id (the last of the previous page)"
            ) from None
    return await runtime.cold.offloaded(actor, limit, after)


@router.post("/sessions/{session_id}/offload", responses=errors(403, 409))
async def offload_session(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Move the session's points into a verified artifact and drop its live collection
    (an ``offload`` operation; ``admin``)."""
    started = await runtime.cold.start_offload(actor, session_id, key)
    return await respond(runtime.operations, started, runtime.settings, prefer)


@router.post("/sessions/{session_id}/reload", responses=errors(403, 409))
async def reload_session(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Bring an offloaded session's points back (a ``reload`` operation; ``admin``); joins
    the reload already in flight, if any."""
    started = await runtime.cold.start_reload(actor, session_id, key)
    return await respond(runtime.operations, started, runtime.settings, prefer)
