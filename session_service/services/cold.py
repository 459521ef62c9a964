"""Cold sessions as the API sees them (API.md section G): starting offloads and reloads,
and the reload that a request needing an offloaded session's points starts or joins."""

from __future__ import annotations

from typing import Any

from temporalio.common import WorkflowIDReusePolicy

from session_service.domain.access import Actor
from session_service.domain.errors import Conflict, Locked, Unprocessable
from session_service.domain.models import Permission, SessionRecord, Storage
from session_service.services.operations import OperationFailed, OperationService, Started
from session_service.services.sessions import SessionService, request_hash
from session_service.temporal.activities.cold_steps import reload_workflow_id
from session_service.temporal.contracts import OffloadInput, OperationKind, ReloadInput


def offload_view(s: SessionRecord) -> dict[str, Any]:
    """An offloaded session as the operator's listing shows it."""
    a = s.artifact
    return {
        "session_id": s.id,
        "name": s.name,
        "status": s.status.value,
        "owner_id": s.owner_id,
        "artifact_key": a.key if a else None,
        "points": a.points if a else None,
        "size_bytes": a.size_bytes if a else None,
        "sha256": a.sha256 if a else None,
        "offloaded_at": a.offloaded_at.isoformat() if a and a.offloaded_at else None,
    }


class ColdService:
    def __init__(self, sessions: SessionService, operations: OperationService) -> None:
        self.sessions = sessions
        self.session_rows = sessions.rows
        self.exports = sessions.pg.exports
        self.keys = sessions.pg.keys
        self.cold = sessions.pg.cold
        self.operations = operations

    async def start_offload(self, actor: Actor, session_id: str, key: str | None) -> Started:
        """``admin``; 409 when another operation holds the session or it is offloaded."""
        kind = OperationKind.OFFLOAD
        ops = self.operations
        found = await ops.find_keyed(kind, actor, key, {"session_id": session_id})
        if found is not None:
            return found
        session = await self.sessions.load(actor, session_id, Permission.admin)
        if session.locked_by is not None:
            raise Locked(session.id, session.locked_by)
        if session.storage is Storage.offloaded:
            raise Conflict(f"session {session.id} is already offloaded")
        exporting = await self.exports.in_flight(session.id)
        if exporting is not None:
            raise Locked(session.id, exporting)
        return await ops.start_keyed(
            kind,
            actor,
            key,
            {"session_id": session.id},
            OffloadInput(session_id=session.id, options=ops.options()),
            session_ids=[session.id],
            owner_id=session.owner_id,
            summary=f"offload {session.name!r}",
        )

    async def start_reload(self, actor: Actor, session_id: str, key: str | None) -> Started:
        """By hand (``admin``): joins the reload in flight, if any; 409 for a live session.

        The workflow id is the session's (one reload at a time), so an Idempotency-Key
        names that id: a repeat gets the reload it started, even once the session is
        live again (when a fresh request would be 409)."""
        scope = actor.key_scope(f"op:{OperationKind.RELOAD.value}")
        digest = request_hash({"session_id": session_id}, actor)
        if key is not None:
            found = await self.keys.find(scope, key)
            if found is not None:
                if found.request_hash != digest:
                    raise Unprocessable(
                        f"Idempotency-Key {key!r} was already used with a different request; "
                        "use a new key for a new request"
                    )
                handle = self.operations.client.get_workflow_handle(found.resource_id)
                return Started(found.resource_id, OperationKind.RELOAD, handle)
        session = await self.sessions.load(actor, session_id, Permission.admin)
        wid = reload_workflow_id(session.id)
        if session.locked_by is not None and session.locked_by != wid:
            raise Locked(session.id, session.locked_by)
        if session.storage is Storage.live and session.locked_by is None:
            raise Conflict(f"session {session.id} is live; there is nothing to reload")
        if key is not None:
            await self.keys.claim(scope, key, digest, wid)
        return await self._reload(actor, session)

    async def _reload(self, actor: Actor, session: SessionRecord) -> Started:
        ops = self.operations
        return await ops._start(  # noqa: SLF001 - the shared start, with a per-session id
            OperationKind.RELOAD,
            ReloadInput(
                session_id=session.id,
                keep_artifact=ops.settings.offload_keep_artifact_after_reload,
                options=ops.options(),
            ),
            actor=actor,
            session_ids=[session.id],
            owner_id=session.owner_id,
            summary=f"reload {session.name!r}",
            workflow_id=reload_workflow_id(session.id),
            cancel_permission=Permission.admin,
            # a session is offloaded and reloaded many times over its life
            reuse=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )

    async def reload_for_use(self, actor: Actor, session_id: str, budget: float) -> Started | None:
        """First use: the operation to wait for before the points are there (the session's
        reload, started or joined), or None when it is live already. The caller's access
        was checked by the request that found the session offloaded.

        An offload that still holds the session (it marks the session before it drops the
        collection) is waited for first, within ``budget``; if it is still running then,
        it is the operation the caller gets to follow."""
        session = await self.session_rows.get(session_id)
        holder = session.locked_by
        if session.storage is Storage.live and holder is None:
            return None
        if holder is not None and holder.startswith("offload-"):
            started = Started(
                holder, OperationKind.OFFLOAD, self.operations.client.get_workflow_handle(holder)
            )
            try:
                if await self.operations.wait(started, budget) is None:
                    return started
            except OperationFailed:
                pass  # undone: the session is live again
            session = await self.session_rows.get(session_id)
            if session.storage is Storage.live:
                return None
        return await self._reload(actor, session)

    async def offloaded(
        self, actor: Actor, limit: int, after_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The offloaded sessions ``actor`` can read (all, for a trusted service)."""
        rows = await self.cold.offloaded(limit, after_id, visible_to=actor.user_id)
        return [offload_view(s) for s in rows]
