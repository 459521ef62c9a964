"""The retention policy (declared before ``/sessions/{id}`` so it is not shadowed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from session_service.api.deps import CurrentActor, Sessions
from session_service.models import RetentionPolicy

router = APIRouter(prefix="/sessions", tags=["retention"])

_DESCRIPTION = (
    "Active or shared sessions inactive for auto_archive_inactive_days are archived; "
    "archived or deleted sessions older than auto_delete_archived_days are deleted permanently; "
    "sessions older than max_age_days are archived; an owner's active sessions beyond the "
    "max_sessions_per_user most recently used are archived. Runs on `schedule` (cron, UTC) "
    "when `enabled`."
)


@router.get("/retention-policy")
async def get_policy(sessions: Sessions) -> dict[str, Any]:
    """The stored retention policy."""
    policy = await sessions.get_policy()
    return {"retention_policy": policy.model_dump(mode="json"), "description": _DESCRIPTION}


@router.put("/retention-policy")
async def put_policy(
    body: RetentionPolicy, sessions: Sessions, actor: CurrentActor
) -> dict[str, Any]:
    """Replace the retention policy (trusted services only)."""
    policy = await sessions.put_policy(actor, body)
    return {"message": "Retention policy updated", "new_policy": policy.model_dump(mode="json")}
