"""Points of a session's collection (API.md section C)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from session_service.api.deps import CurrentActor, RuntimeDep, Sessions
from session_service.api.openapi import errors
from session_service.api.routes.cold import first_use
from session_service.domain.errors import Unprocessable
from session_service.domain.models import (
    MAX_PAGE,
    CollectionInfo,
    PointsDelete,
    PointsPage,
    PointsUpsert,
    check_point_id,
)
from session_service.domain.point_query import PointQuery, QueryResult

router = APIRouter(prefix="/sessions/{session_id}", tags=["points"])
PreferHeader = Annotated[
    str | None,
    Header(description="an offloaded session is reloaded first: respond-async, or wait=N"),
]


@router.put("/points", response_model=None, responses=errors(403, 409))
async def upsert_points(
    session_id: str,
    body: PointsUpsert,
    runtime: RuntimeDep,
    actor: CurrentActor,
    prefer: PreferHeader = None,
) -> dict[str, Any] | JSONResponse:
    """Insert or replace up to 1,000 points; vectors must have the session's ``vector_size``."""

    async def call() -> dict[str, Any]:
        return {"upserted": await runtime.sessions.upsert_points(actor, session_id, body.points)}

    return await first_use(runtime, actor, session_id, prefer, call)


@router.get("/points", response_model=PointsPage)
async def list_points(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[str | None, Query(description="next_offset of the previous page")] = None,
    with_vectors: bool = False,
    prefer: PreferHeader = None,
) -> PointsPage | JSONResponse:
    """A page of points in id order."""
    start: int | str | None = None
    if offset is not None and offset != "":
        try:
            start = check_point_id(int(offset) if offset.isdigit() else offset)
        except ValueError as exc:
            raise Unprocessable(f"offset: {exc}") from None

    async def call() -> PointsPage:
        return await runtime.sessions.list_points(
            actor, session_id, limit=limit, offset=start, with_vectors=with_vectors
        )

    return await first_use(runtime, actor, session_id, prefer, call)


@router.post("/points/delete", response_model=None, responses=errors(403, 409))
async def delete_points(
    session_id: str,
    body: PointsDelete,
    runtime: RuntimeDep,
    actor: CurrentActor,
    prefer: PreferHeader = None,
) -> dict[str, Any] | JSONResponse:
    """Delete points by id; unknown ids are ignored and not counted."""

    async def call() -> dict[str, Any]:
        return {"deleted": await runtime.sessions.delete_points(actor, session_id, body.ids)}

    return await first_use(runtime, actor, session_id, prefer, call)


@router.post("/points/query", response_model=QueryResult)
async def query_points(
    session_id: str,
    body: PointQuery,
    runtime: RuntimeDep,
    actor: CurrentActor,
    prefer: PreferHeader = None,
) -> QueryResult | JSONResponse:
    """The points nearest to a vector, best first, optionally filtered on payload keys."""

    async def call() -> QueryResult:
        return await runtime.sessions.query_points(actor, session_id, body)

    return await first_use(runtime, actor, session_id, prefer, call)


@router.get("/collection", response_model=CollectionInfo, response_model_exclude_none=True)
async def collection(session_id: str, sessions: Sessions, actor: CurrentActor) -> CollectionInfo:
    """The session's Qdrant collection: name, existence, size and vector parameters."""
    return await sessions.collection(actor, session_id)
