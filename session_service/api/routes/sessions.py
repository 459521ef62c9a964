"""Sessions: create, list, read, update, soft delete, archive, restore, share, stats."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from session_service.api.deps import CurrentActor, IdempotencyKey, RuntimeDep, Sessions
from session_service.api.openapi import errors
from session_service.api.prefer import respond
from session_service.domain.errors import PreconditionFailed
from session_service.domain.models import (
    MAX_PAGE,
    Collaborators,
    DeleteResult,
    Message,
    Permission,
    SessionCreate,
    SessionModel,
    SessionStatus,
    SessionUpdate,
    ShareRequest,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])


def _etag(version: int) -> str:
    return f'"{version}"'


_STRONG_ETAG = re.compile(r'"([0-9]{1,19})"')
MAX_VERSION = 2**63 - 1


def _if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` names; None for ``*`` or no header.

    RFC 9110 compares strongly: a weak ``W/"3"`` never matches, and neither does a tag
    this service could not have sent (not ASCII digits, or beyond a bigint)."""
    if header is None or header.strip() == "*":
        return None
    found = _STRONG_ETAG.fullmatch(header.strip())
    if found is None or int(found.group(1)) > MAX_VERSION:
        raise PreconditionFailed(
            f"If-Match {header!r} is not a strong ETag this service sent; GET the session "
            "and send its ETag"
        )
    return int(found.group(1))


@router.post("", response_model=SessionModel, responses=errors(403))
async def create_session(
    body: SessionCreate, sessions: Sessions, actor: CurrentActor, key: IdempotencyKey
) -> SessionModel:
    """Create a session and its Qdrant collection (both exist when this returns)."""
    return (await sessions.create(actor, body, key)).public()


@router.get("", response_model=list[SessionModel])
async def list_sessions(
    request: Request,
    response: Response,
    sessions: Sessions,
    actor: CurrentActor,
    status: SessionStatus | None = None,
    owner_id: str | None = None,
    tags: Annotated[str | None, Query(description="Comma-separated; any of")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    page_token: str | None = None,
) -> list[SessionModel]:
    """Sessions the caller can read, newest ``updated_at`` first; next page in ``Link``."""
    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags else []
    rows, next_token = await sessions.list_sessions(
        actor,
        status=status,
        owner_id=owner_id,
        tags=tag_list,
        limit=limit,
        page_token=page_token,
    )
    if next_token is not None:
        url = request.url.include_query_params(page_token=next_token, limit=limit)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return [r.public() for r in rows]


@router.get("/{session_id}", response_model=SessionModel)
async def get_session(
    session_id: str, response: Response, sessions: Sessions, actor: CurrentActor
) -> SessionModel:
    """One session, with an ``ETag`` for conditional updates."""
    record = await sessions.load(actor, session_id, Permission.read)
    response.headers["ETag"] = _etag(record.version)
    return record.public()


@router.put("/{session_id}", response_model=SessionModel, responses=errors(403, 409, 412))
async def update_session(
    session_id: str,
    body: SessionUpdate,
    response: Response,
    sessions: Sessions,
    actor: CurrentActor,
    if_match: Annotated[str | None, Header()] = None,
) -> SessionModel:
    """Update fields; ``metadata`` is merged; ``If-Match`` guards against lost updates."""
    record = await sessions.update(actor, session_id, body, _if_match(if_match))
    response.headers["ETag"] = _etag(record.version)
    return record.public()


@router.delete("/{session_id}", response_model=DeleteResult, responses=errors(403, 409))
async def delete_session(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    permanent: bool = False,
    prefer: Annotated[str | None, Header()] = None,
) -> DeleteResult | JSONResponse:
    """Soft delete (status ``deleted``, collection kept), or ``permanent=true``: an operation
    that drops the collection and the row."""
    if permanent:
        started = await runtime.operations.start_delete(actor, session_id)
        return await respond(runtime.operations, started, runtime.settings, prefer)
    await runtime.sessions.set_status(actor, session_id, SessionStatus.deleted)
    return DeleteResult(message=f"Session {session_id} deleted", permanent=False)


@router.post("/{session_id}/archive", response_model=Message, responses=errors(403, 409))
async def archive_session(session_id: str, sessions: Sessions, actor: CurrentActor) -> Message:
    """Archive a session."""
    await sessions.set_status(actor, session_id, SessionStatus.archived)
    return Message(message=f"Session {session_id} archived")


@router.post("/{session_id}/restore", response_model=Message, responses=errors(403, 409))
async def restore_session(session_id: str, sessions: Sessions, actor: CurrentActor) -> Message:
    """Make an archived or soft-deleted session active again."""
    await sessions.set_status(actor, session_id, SessionStatus.active)
    return Message(message=f"Session {session_id} restored")


@router.post("/{session_id}/share", response_model=SessionModel, responses=errors(403, 409))
async def share_session(
    session_id: str, body: ShareRequest, sessions: Sessions, actor: CurrentActor
) -> SessionModel:
    """Give users access; each is listed once in ``shared_with``."""
    return (await sessions.share(actor, session_id, body.user_ids, body.permissions)).public()


@router.delete("/{session_id}/share/{user_id}", response_model=Message, responses=errors(403, 409))
async def unshare_session(
    session_id: str, user_id: str, sessions: Sessions, actor: CurrentActor
) -> Message:
    """Take a user's access away; with nobody left the session is active again."""
    await sessions.unshare(actor, session_id, user_id)
    return Message(message=f"User {user_id} removed from session {session_id}")


@router.get("/{session_id}/collaborators", response_model=Collaborators)
async def collaborators(session_id: str, sessions: Sessions, actor: CurrentActor) -> Collaborators:
    """Owner, collaborators and each one's permissions."""
    s = await sessions.load(actor, session_id, Permission.read)
    return Collaborators(
        session_id=s.id,
        owner_id=s.owner_id,
        shared_with=s.shared_with,
        total_collaborators=len(s.shared_with) + (1 if s.owner_id else 0),
        permissions=s.permissions,
    )


@router.get("/{session_id}/stats")
async def get_stats(session_id: str, sessions: Sessions, actor: CurrentActor) -> dict[str, Any]:
    """Counters, model usage, collection size, age and sharing."""
    return await sessions.stats(actor, session_id)
