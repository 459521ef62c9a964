"""Who may do what to a session (API.md section E)."""

from __future__ import annotations

from dataclasses import dataclass

from session_service.errors import Forbidden, NotFound
from session_service.models import OWNER_RANK, PERMISSION_RANK, Permission, SessionRecord


@dataclass(frozen=True)
class Actor:
    """The caller: a named user (``X-User-Id``), or a trusted platform service (None)."""

    user_id: str | None = None

    @property
    def trusted(self) -> bool:
        return self.user_id is None


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
