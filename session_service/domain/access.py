"""Who may do what to a session (API.md section E)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from session_service.domain.errors import Forbidden, NotFound
from session_service.domain.models import OWNER_RANK, PERMISSION_RANK, Permission, SessionRecord


@dataclass(frozen=True)
class Actor:
    """The caller: a named user (``X-User-Id``), or a trusted platform service (None).

    ``credential`` identifies the API key a call came with (a digest, never the key).
    """

    user_id: str | None = None
    credential: str | None = None

    @property
    def trusted(self) -> bool:
        return self.user_id is None

    @property
    def caller(self) -> str:
        """Who owns an Idempotency-Key: the user, else the API key, else '' (keys are off)."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.credential is not None:
            return f"key:{self.credential}"
        return ""

    def key_scope(self, scope: str) -> str:
        """``scope`` narrowed to this caller, so two callers' keys never collide (API.md E)."""
        return f"{scope}|{self.caller}" if self.caller else scope


def credential_of(authorization: str | None) -> str | None:
    """A stable, non-reversible name for the bearer token of an ``Authorization`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:32]


TRUSTED = Actor()


def rank(session: SessionRecord, actor: Actor) -> int:
    if actor.user_id is None:
        return OWNER_RANK
    if session.owner_id is not None and session.owner_id == actor.user_id:
        return OWNER_RANK
    perms = session.permissions.get(actor.user_id, [])
    return max((PERMISSION_RANK[p] for p in perms), default=0)


def require(session: SessionRecord, actor: Actor, needed: Permission) -> None:
    """404 for a session the actor can't read (its existence is not disclosed), 403 otherwise."""
    have = rank(session, actor)
    if have == 0:
        raise NotFound(f"session {session.id} not found")
    if have < PERMISSION_RANK[needed]:
        raise Forbidden(
            f"user {actor.user_id!r} has no {needed.value!r} permission on session {session.id}"
        )
