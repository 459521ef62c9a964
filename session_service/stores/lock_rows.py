"""Holding sessions: an operation's lock on its sessions (DESIGN.md saga rules 1 and 4),
the rows it deletes while it holds them, and a points write's short hold on a live
session's storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from session_service.domain.errors import Locked, NotFound, Offloaded
from session_service.domain.models import SessionRecord, Storage
from session_service.domain.session_rules import check_lockable
from session_service.stores.postgres import read, session_uuid

if TYPE_CHECKING:
    from session_service.stores.postgres import Conn


@dataclass(frozen=True)
class HeldForDelete:
    """A batch delete's hold: (id, collection) of the sessions now held, in the order
    given; the ids held by another operation (or restored since); the ids that don't
    exist."""

    held: list[tuple[str, str]]
    held_by_others: list[str]
    missing: list[str]


class LockRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def lock(
        self,
        operation_id: str,
        session_ids: Sequence[str],
        *,
        same_vectors: bool = False,
        allow_deleted: bool = False,
        need_live: bool = False,
        no_exports: bool = False,
    ) -> list[SessionRecord]:
        """Mark sessions as held by ``operation_id``, all or none; a repeat is a no-op.

        ``no_exports``: refuse (Locked, naming the export) while an export of one of them
        is being written; checked under the row locks, which ``export_create`` waits for,
        so an export either started before the hold (refused here) or sees it."""
        ids = [session_uuid(s) for s in session_ids]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, locked_by FROM sessions WHERE id = ANY($1::uuid[])
                   ORDER BY id FOR UPDATE""",
                ids,
            )
            found = {str(r["id"]): r["locked_by"] for r in rows}
            for sid in session_ids:
                key = str(session_uuid(sid))
                if key not in found:
                    raise NotFound(f"session {sid} not found")
                if found[key] is not None and found[key] != operation_id:
                    raise Locked(sid, found[key])
            if no_exports and any(v != operation_id for v in found.values()):
                exporting = await conn.fetchrow(
                    """SELECT session_id, operation_id FROM exports
                       WHERE session_id = ANY($1::uuid[]) AND status = 'writing' LIMIT 1""",
                    ids,
                )
                if exporting is not None:
                    raise Locked(str(exporting["session_id"]), exporting["operation_id"])
            records = [await read(conn, s) for s in session_ids]
            check_lockable(
                records,
                allow_deleted=allow_deleted,
                need_live=need_live,
                same_vectors=same_vectors,
            )
            await conn.execute(
                "UPDATE sessions SET locked_by = $2 WHERE id = ANY($1::uuid[])", ids, operation_id
            )
        return records

    async def unlock(self, operation_id: str, session_ids: Sequence[str]) -> None:
        """Release what ``operation_id`` holds; safe when it holds nothing."""
        await self.pool.execute(
            "UPDATE sessions SET locked_by = NULL WHERE id = ANY($1::uuid[]) AND locked_by = $2",
            [session_uuid(s) for s in session_ids],
            operation_id,
        )

    async def delete_held(self, operation_id: str, session_id: str) -> None:
        """Delete a session only while ``operation_id`` holds it: the undo of a session the
        operation created, and the last step of a permanent delete. Gone already is fine."""
        await self.pool.execute(
            "DELETE FROM sessions WHERE id = $1 AND locked_by = $2",
            session_uuid(session_id),
            operation_id,
        )

    async def hold_unheld(self, operation_id: str, session_ids: Sequence[str]) -> HeldForDelete:
        """Hold each retired session nobody else holds (a batch delete's lock: unlike
        ``lock``, not all or none). A repeat is a no-op."""
        ids = [session_uuid(s) for s in session_ids]
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetch(
                """UPDATE sessions SET locked_by = $2
                   WHERE id = ANY($1::uuid[]) AND (locked_by IS NULL OR locked_by = $2)
                     AND status IN ('archived', 'deleted')
                   RETURNING id, qdrant_collection_name""",
                ids,
                operation_id,
            )
            others = await conn.fetch(
                """SELECT id FROM sessions WHERE id = ANY($1::uuid[])
                   AND (locked_by IS DISTINCT FROM $2 OR status NOT IN ('archived', 'deleted'))""",
                ids,
                operation_id,
            )
        mine = {str(r["id"]): str(r["qdrant_collection_name"]) for r in held}
        taken = {str(r["id"]) for r in others}
        keys = [str(i) for i in ids]
        return HeldForDelete(
            held=[(k, mine[k]) for k in keys if k in mine],
            held_by_others=[k for k in keys if k in taken],
            missing=[k for k in keys if k not in mine and k not in taken],
        )

    async def delete_held_many(
        self, operation_id: str, delete_ids: Sequence[str], release_ids: Sequence[str]
    ) -> None:
        """A batch delete's last step, in one transaction: the rows whose collections are
        gone, and the release of those whose drop failed. Only rows ``operation_id`` holds,
        so a repeat changes nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM sessions WHERE id = ANY($1::uuid[]) AND locked_by = $2",
                [session_uuid(s) for s in delete_ids],
                operation_id,
            )
            await conn.execute(
                """UPDATE sessions SET locked_by = NULL
                   WHERE id = ANY($1::uuid[]) AND locked_by = $2""",
                [session_uuid(s) for s in release_ids],
                operation_id,
            )

    @asynccontextmanager
    async def points_write(self, session_id: str) -> AsyncIterator[Conn]:
        """Hold a live session's storage for one points write (API.md section G): a
        transaction holding ``FOR KEY SHARE`` on its row while the vector write runs, so an
        offload's hold (``lock``: ``FOR UPDATE``) waits for the writes in flight, and a
        write never reaches a collection being offloaded or dropped. Writes don't wait for
        each other, nor for stats and metadata updates (those take ``FOR NO KEY UPDATE``,
        which ``KEY SHARE`` lets through). Raises Offloaded, or Locked unless the holder is
        the session's own reload (which a write joins). Touch inside, through the yielded
        connection, after the vector write (the row lock it takes is then short)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT storage, locked_by FROM sessions WHERE id = $1 FOR KEY SHARE",
                session_uuid(session_id),
            )
            if row is None:
                raise NotFound(f"session {session_id} not found")
            if row["storage"] != Storage.live.value:
                raise Offloaded(session_id)
            holder = row["locked_by"]
            if holder is not None and not holder.startswith("reload-"):
                raise Locked(session_id, holder)
            yield conn
