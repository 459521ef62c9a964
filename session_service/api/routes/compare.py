"""Side-by-side comparison of sessions (declared before ``/sessions/{id}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from session_service.api.deps import CurrentActor, Sessions
from session_service.api.openapi import errors
from session_service.domain.models import CompareRequest

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.get("/compare", responses=errors(404))
async def compare_get(
    sessions: Sessions,
    actor: CurrentActor,
    session_ids: Annotated[str, Query(description="Comma-separated ids, at least two")],
) -> dict[str, Any]:
    """Compare two or more sessions."""
    return await sessions.compare(actor, session_ids.split(","))


@router.post("/compare", responses=errors(404))
async def compare_post(
    body: CompareRequest, sessions: Sessions, actor: CurrentActor
) -> dict[str, Any]:
    """Compare two or more sessions (the web UI's form)."""
    return await sessions.compare(actor, body.session_ids)
