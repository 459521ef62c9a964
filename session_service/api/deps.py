"""``Annotated`` dependency aliases that keep route signatures short.

Every dependency is ``async def``: none does I/O, and FastAPI runs a plain
``def`` dependency in the thread pool, one hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from session_service.domain.access import Actor, credential_of
from session_service.domain.errors import Unprocessable
from session_service.services.runtime import Runtime
from session_service.services.sessions import SessionService


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_sessions(request: Request) -> SessionService:
    return sessions_of(request)


UserIdHeader = Annotated[
    str | None,
    Header(description="Acting user, set by the API gateway; absent for platform services."),
]


def actor_for(x_user_id: str | None) -> Actor:
    """The caller named by ``X-User-Id`` (None: a trusted platform service)."""
    if x_user_id is not None:
        x_user_id = x_user_id.strip()
        if not x_user_id or len(x_user_id) > 200 or not x_user_id.isprintable():
            raise Unprocessable("X-User-Id must be 1 to 200 printable characters")
    return Actor(user_id=x_user_id)


def sessions_of(request: Request) -> SessionService:
    return runtime_of(request).sessions


async def get_actor(
    x_user_id: UserIdHeader = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Actor:
    actor = actor_for(x_user_id)
    return Actor(user_id=actor.user_id, credential=credential_of(authorization))


async def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(description="Repeat a POST with the same key to get the same result once."),
    ] = None,
) -> str | None:
    if idempotency_key is None:
        return None
    key = idempotency_key.strip().strip('"')
    if not key or len(key) > 200 or not key.isprintable():
        raise Unprocessable("Idempotency-Key must be 1 to 200 printable characters")
    return key


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Sessions = Annotated[SessionService, Depends(get_sessions)]
CurrentActor = Annotated[Actor, Depends(get_actor)]
IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]
