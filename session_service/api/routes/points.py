"""Points of a session's collection (API.md section C)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from session_service.api.deps import CurrentActor, Sessions
from session_service.api.openapi import errors
from session_service.errors import Unprocessable
from session_service.models import (
    MAX_PAGE,
    CollectionInfo,
    PointsDelete,
    PointsPage,
    PointsUpsert,
    check_point_id,
)
from session_service.point_query import PointQuery, QueryResult

router = APIRouter(prefix="/sessions/{session_id}", tags=["points"])


@router.put("/points", responses=errors(403, 409))
async def upsert_points(
    session_id: str, body: PointsUpsert, sessions: Sessions, actor: CurrentActor
) -> dict[str, Any]:
    """Insert or replace up to 1,000 points; vectors must have the session's ``vector_size``."""
    return {"upserted": await sessions.upsert_points(actor, session_id, body.points)}


@router.get("/points", response_model=PointsPage)
async def list_points(
    session_id: str,
    sessions: Sessions,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[str | None, Query(description="next_offset of the previous page")] = None,
    with_vectors: bool = False,
) -> PointsPage:
    """A page of points in id order."""
    start: int | str | None = None
    if offset is not None and offset != "":
        try:
            start = check_point_id(int(offset) if offset.isdigit() else offset)
        except ValueError as exc:
            raise Unprocessable(f"offset: {exc}") from None
    return await sessions.list_points(
        actor, session_id, limit=limit, offset=start, with_vectors=with_vectors
    )


@router.post("/points/delete", responses=errors(403, 409))
async def delete_points(
    session_id: str, body: PointsDelete, sessions: Sessions, actor: CurrentActor
) -> dict[str, Any]:
    """Delete points by id; unknown ids are ignored and not counted."""
    return {"deleted": await sessions.delete_points(actor, session_id, body.ids)}


@router.post("/points/query", response_model=QueryResult)
async def query_points(
    session_id: str, body: PointQuery, sessions: Sessions, actor: CurrentActor
) -> QueryResult:
    """The points nearest to a vector, best first, optionally filtered on payload keys."""
    return await sessions.query_points(actor, session_id, body)


@router.get("/collection", response_model=CollectionInfo)
async def collection(session_id: str, sessions: Sessions, actor: CurrentActor) -> CollectionInfo:
    """The session's Qdrant collection: name, existence, size and vector parameters."""
    return await sessions.collection(actor, session_id)
