"""The retention policy and on-demand cleanup (declared before ``/sessions/{id}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from session_service.api.deps import CurrentActor, IdempotencyKey, RuntimeDep
from session_service.api.openapi import errors
from session_service.api.prefer import respond
from session_service.domain.models import RetentionPolicy

router = APIRouter(prefix="/sessions", tags=["retention"])


@router.get("/retention-policy")
async def get_policy(runtime: RuntimeDep) -> dict[str, Any]:
    """The stored retention policy and its schedule's next runs."""
    return await runtime.retention.view()


@router.put("/retention-policy", responses=errors(403))
async def put_policy(
    body: RetentionPolicy, runtime: RuntimeDep, actor: CurrentActor
) -> dict[str, Any]:
    """Replace the retention policy and reschedule (trusted services only)."""
    policy = await runtime.retention.replace(actor, body)
    return {"message": "Retention policy updated", "new_policy": policy.model_dump(mode="json")}


@router.post("/cleanup", responses=errors(403))
async def cleanup(
    body: RetentionPolicy,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    dry_run: bool = False,
    prefer: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Apply a policy now (a cleanup operation); ``dry_run`` lists and changes nothing."""
    started = await runtime.retention.start_cleanup(actor, body, dry_run, key)
    return await respond(runtime.operations, started, runtime.settings, prefer)
