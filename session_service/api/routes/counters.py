"""The hot per-session writes of the processing services: counters and model usage.

A router of their own, included right after ``/health``: the platform's
services call these far more often than anything else, and this FastAPI tries
routes one by one, so they are matched first. No other route has these paths,
so nothing is shadowed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from session_service.api.deps import CurrentActor, Sessions
from session_service.errors import BadRequest
from session_service.models import Message, ModelType, StatsUpdate

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.put("/{session_id}/stats", response_model=Message)
async def put_stats(
    session_id: str, body: StatsUpdate, sessions: Sessions, actor: CurrentActor
) -> Message:
    """Increment counters atomically; merge ``metadata``."""
    await sessions.add_stats(actor, session_id, body)
    return Message(message="Session statistics updated")


@router.put("/{session_id}/model-usage", response_model=Message)
async def put_model_usage(
    session_id: str,
    sessions: Sessions,
    actor: CurrentActor,
    model_type: Annotated[str, Query(description="llm or embedding")],
    model_name: Annotated[str, Query(min_length=1, max_length=200)],
) -> Message:
    """Record that a model was used (added once to its list; ``model_switches`` + 1)."""
    try:
        kind = ModelType(model_type)
    except ValueError:
        raise BadRequest(f"model_type must be 'llm' or 'embedding', not {model_type!r}") from None
    await sessions.record_model(actor, session_id, kind, model_name)
    return Message(message=f"Recorded {kind.value} model {model_name}")
