"""Long-running operations: merge, split, and the operations resource (section B)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from session_service.api.deps import CurrentActor, IdempotencyKey, RuntimeDep
from session_service.api.openapi import errors
from session_service.api.prefer import respond
from session_service.domain.models import MergeRequest, Operation, OperationStatus, SplitRequest
from session_service.temporal.contracts import OperationKind

router = APIRouter(tags=["operations"])

PreferHeader = Annotated[
    str | None, Header(description="respond-async, or wait=N seconds (RFC 7240)")
]
_LONG: dict[int | str, dict[str, Any]] = {
    200: {"description": "Finished in time: the final body, with an Operation-Id header"},
    202: {"model": Operation, "description": "Still running: see Location"},
}


@router.post("/sessions/merge", responses={**_LONG, **errors(403, 404, 409)})
async def merge_sessions(
    body: MergeRequest,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Merge two or more sessions into a new one (a merge operation)."""
    started = await runtime.operations.start_merge(actor, body, key)
    return await respond(runtime.operations, started, runtime.settings, prefer)


@router.post("/sessions/{session_id}/split", responses={**_LONG, **errors(403, 409)})
async def split_session(
    session_id: str,
    body: SplitRequest,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Split listed points of a session into new sessions (a split operation)."""
    started = await runtime.operations.start_split(actor, session_id, body, key)
    return await respond(runtime.operations, started, runtime.settings, prefer)


@router.get("/operations/{operation_id}", response_model=Operation)
async def get_operation(operation_id: str, runtime: RuntimeDep, actor: CurrentActor) -> Operation:
    """An operation: status, live progress, result or error."""
    return await runtime.operations.get_for(actor, operation_id)


@router.get("/operations", response_model=list[Operation])
async def list_operations(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    actor: CurrentActor,
    session_id: str | None = None,
    kind: OperationKind | None = None,
    status: OperationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: str | None = None,
) -> list[Operation]:
    """Operations, newest first, filtered by session, kind and status; only those whose
    sessions the caller can read. The next page is in ``Link: <...>; rel="next"``."""
    ops, next_token = await runtime.operations.list_for(
        actor,
        session_id=session_id,
        kind=kind,
        status=status,
        limit=limit,
        page_token=page_token,
    )
    if next_token is not None:
        url = request.url.include_query_params(page_token=next_token, limit=limit)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return ops


@router.post(
    "/operations/{operation_id}/cancel",
    status_code=202,
    response_model=Operation,
    responses=errors(403, 409),
)
async def cancel_operation(
    operation_id: str, runtime: RuntimeDep, actor: CurrentActor
) -> Operation:
    """Ask a running operation to undo what it did and end ``cancelled``."""
    return await runtime.operations.cancel(actor, operation_id)
