"""The hot per-session writes of the processing services: counters and model usage.

The platform's services call these far more often than anything else, so
they are made cheap to reach (measured with ``bench/asgi_cost.py``, in git history at
c98c26c; BENCHMARKS.md keeps the figures):

* ``install`` puts their routes on the app itself, first: this FastAPI tries
  routes one by one and wraps each included router in another layer of
  dispatch (~20 µs a request). No other route has these paths, so nothing is
  shadowed.
* They take the request and the ``X-User-Id`` header as plain parameters
  instead of the shared dependencies: this FastAPI re-solves every
  sub-dependency on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request

from session_service.api.deps import UserIdHeader, actor_for, sessions_of
from session_service.api.openapi import errors
from session_service.domain.errors import BadRequest
from session_service.domain.models import Message, ModelType, StatsUpdate

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.put("/{session_id}/stats", response_model=Message, responses=errors(403))
async def put_stats(
    session_id: str, body: StatsUpdate, request: Request, x_user_id: UserIdHeader = None
) -> Message:
    """Increment counters atomically; merge ``metadata``."""
    await sessions_of(request).add_stats(actor_for(x_user_id), session_id, body)
    return Message(message="Session statistics updated")


@router.put("/{session_id}/model-usage", response_model=Message, responses=errors(403))
async def put_model_usage(
    session_id: str,
    request: Request,
    model_type: Annotated[str, Query(description="llm or embedding")],
    model_name: Annotated[str, Query(min_length=1, max_length=200)],
    x_user_id: UserIdHeader = None,
) -> Message:
    """Record that a model was used (added once to its list; ``model_switches`` + 1)."""
    try:
        kind = ModelType(model_type)
    except ValueError:
        raise BadRequest(f"model_type must be 'llm' or 'embedding', not {model_type!r}") from None
    actor = actor_for(x_user_id)
    await sessions_of(request).record_model(actor, session_id, kind, model_name)
    return Message(message=f"Recorded {kind.value} model {model_name}")


def install(app: FastAPI) -> None:
    """Add these routes to ``app`` directly; call before any ``include_router``."""
    app.router.routes.extend(router.routes)
