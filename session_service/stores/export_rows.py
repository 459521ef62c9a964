"""The exports table: where each export artifact is, and what it holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from session_service.domain.errors import Locked, NotFound
from session_service.stores.postgres import PageCursor, session_uuid


@dataclass(frozen=True)
class ExportRow:
    """One export: ``writing`` until its file is complete, then ``ready`` with its size,
    point count and checksums (``sha256`` of the NDJSON as its trailer says,
    ``file_sha256`` of the gzip file as downloaded)."""

    export_id: str
    session_id: str
    owner_id: str | None
    status: str
    operation_id: str
    size_bytes: int | None
    points: int | None
    sha256: str | None
    file_sha256: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> ExportRow:
        values: dict[str, Any] = dict(row)
        return cls(**{**values, "session_id": str(values["session_id"])})


class ExportRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, export_id: str, session_id: str, owner_id: str | None, operation_id: str
    ) -> None:
        """Record an export being written; refused (Locked) while an offload holds the
        session, whose drop would cut the export short. The row lock orders this against
        an offload's hold (``LockRows.lock(no_exports=True)``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            holder = await conn.fetchval(
                "SELECT locked_by FROM sessions WHERE id = $1 FOR KEY SHARE",
                session_uuid(session_id),
            )
            if holder is not None and holder.startswith("offload-"):
                raise Locked(session_id, holder)
            await conn.execute(
                """INSERT INTO exports (export_id, session_id, owner_id, status, operation_id)
                   VALUES ($1, $2, $3, 'writing', $4) ON CONFLICT (export_id) DO NOTHING""",
                export_id,
                session_uuid(session_id),
                owner_id,
                operation_id,
            )

    async def ready(
        self, export_id: str, *, size_bytes: int, points: int, sha256: str, file_sha256: str
    ) -> None:
        await self.pool.execute(
            """UPDATE exports SET status = 'ready', size_bytes = $2, points = $3, sha256 = $4,
                   file_sha256 = $5, finished_at = COALESCE(finished_at, now())
               WHERE export_id = $1""",
            export_id,
            size_bytes,
            points,
            sha256,
            file_sha256,
        )

    async def get(self, export_id: str) -> ExportRow:
        row = await self.pool.fetchrow("SELECT * FROM exports WHERE export_id = $1", export_id)
        if row is None:
            raise NotFound(f"export {export_id} not found")
        return ExportRow.of(row)

    async def page(
        self, session_id: str | None, limit: int, after: PageCursor | None
    ) -> list[ExportRow]:
        """Newest first, ``limit`` after ``after`` (the last row's (created_at, id))."""
        where: list[str] = []
        args: list[Any] = []
        if session_id is not None:
            args.append(session_uuid(session_id))
            where.append(f"session_id = ${len(args)}")
        if after is not None:
            args += [after.updated_at, after.id]
            where.append(f"(created_at, export_id) < (${len(args) - 1}, ${len(args)})")
        sql = "SELECT * FROM exports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(limit)
        sql += f" ORDER BY created_at DESC, export_id DESC LIMIT ${len(args)}"
        return [ExportRow.of(r) for r in await self.pool.fetch(sql, *args)]

    async def delete(self, export_id: str) -> None:
        await self.pool.execute("DELETE FROM exports WHERE export_id = $1", export_id)

    async def in_flight(self, session_id: str) -> str | None:
        """The operation still writing an export of the session, if any: an offload
        would drop the collection under it."""
        found: str | None = await self.pool.fetchval(
            """SELECT operation_id FROM exports WHERE session_id = $1 AND status = 'writing'
               ORDER BY created_at DESC LIMIT 1""",
            session_uuid(session_id),
        )
        return found
