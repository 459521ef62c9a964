"""The sessions table: reading sessions as :class:`SessionRecord` and writing their
fields, counters and model usage.

Counters are incremented in SQL and metadata merged with jsonb ``||``, so concurrent
writers add up without read-modify-write races.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from session_service.domain.errors import Locked, NotFound, PreconditionFailed, Unprocessable
from session_service.domain.models import (
    ModelType,
    SessionConfiguration,
    SessionRecord,
    SessionStatus,
)
from session_service.stores.postgres import SELECT, PageCursor, read, record, session_uuid

if TYPE_CHECKING:
    from session_service.stores.postgres import Conn

_STAT_COLUMNS = ("urls_processed", "content_analyzed", "clusters_generated", "embeddings_created")

# Cold-session operations (offload, reload) move a session's points and nothing else:
# writes of its metadata (fields, status, sharing), counters and model usage go through
# while they hold it (API.md section G: they never wait); points writes still wait.
_STORAGE_HOLDERS = "(locked_by IS NULL OR locked_by LIKE 'offload-%' OR locked_by LIKE 'reload-%')"


@dataclass(frozen=True)
class SessionFilter:
    status: SessionStatus | None = None
    owner_id: str | None = None
    tags: Sequence[str] = ()
    visible_to: str | None = None


class SessionRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # reads

    async def get(self, session_id: str, conn: Conn | None = None) -> SessionRecord:
        return await read(conn or self.pool, session_id)

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord]:
        """Sessions in the order asked; NotFound names the first missing id."""
        ids = [session_uuid(s) for s in session_ids]
        rows = await self.pool.fetch(SELECT + " WHERE s.id = ANY($1::uuid[])", ids)
        by_id = {str(r["id"]): record(r) for r in rows}
        for sid in session_ids:
            if str(session_uuid(sid)) not in by_id:
                raise NotFound(f"session {sid} not found")
        return [by_id[str(session_uuid(s))] for s in session_ids]

    async def get_existing(self, session_ids: Sequence[str]) -> list[SessionRecord]:
        """Those of the sessions that exist (ids that are not UUIDs name none)."""
        ids = []
        for sid in session_ids:
            try:
                ids.append(uuid.UUID(sid))
            except ValueError:
                continue
        rows = await self.pool.fetch(SELECT + " WHERE s.id = ANY($1::uuid[])", ids)
        return [record(r) for r in rows]

    async def search(
        self, flt: SessionFilter, limit: int, after: PageCursor | None = None
    ) -> list[SessionRecord]:
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.status is not None:
            where.append(f"s.status = {arg(flt.status.value)}")
        if flt.owner_id is not None:
            where.append(f"s.owner_id = {arg(flt.owner_id)}")
        if flt.tags:
            where.append(f"s.tags && {arg(list(flt.tags))}::text[]")
        if flt.visible_to is not None:
            user = arg(flt.visible_to)
            where.append(
                f"(s.owner_id = {user} OR EXISTS (SELECT 1 FROM collaborators x "
                f"WHERE x.session_id = s.id AND x.user_id = {user}))"
            )
        if after is not None:
            where.append(f"(s.updated_at, s.id) < ({arg(after.updated_at)}, {arg(after.id)}::uuid)")
        sql = SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY s.updated_at DESC, s.id DESC LIMIT {arg(limit)}"
        return [record(r) for r in await self.pool.fetch(sql, *args)]

    # writes

    async def insert(
        self,
        conn: Conn,
        *,
        session_id: str,
        name: str,
        description: str | None,
        owner_id: str | None,
        configuration: SessionConfiguration,
        tags: list[str],
        metadata: dict[str, Any],
        collection_name: str,
        locked_by: str | None = None,
    ) -> SessionRecord:
        """Insert a new session; a repeat with the same id changes nothing (idempotent steps)."""
        await conn.execute(
            """INSERT INTO sessions (id, name, description, status, owner_id,
                   qdrant_collection_name, configuration, tags, metadata, locked_by)
               VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9)
               ON CONFLICT (id) DO NOTHING""",
            uuid.UUID(session_id),
            name,
            description,
            owner_id,
            collection_name,
            configuration.model_dump(mode="json"),
            tags,
            metadata,
            locked_by,
        )
        return await self.get(session_id, conn)

    async def mutate(
        self,
        session_id: str,
        assignments: str,
        args: Sequence[Any],
        *,
        if_version: int | None = None,
        conn: Conn | None = None,
        changes: int = 1,
        storage_ops_ok: bool = False,
    ) -> None:
        """Run ``UPDATE sessions SET <assignments>`` on an unlocked session (or, with
        ``storage_ops_ok``, one held only by an offload or a reload).

        ``$1`` is the session id; ``args`` continue from ``$2``. Every change
        bumps ``version`` (the ETag; by ``changes`` when one UPDATE carries
        several requests) and ``updated_at`` (last activity).
        """
        sid = session_uuid(session_id)
        all_args: list[Any] = [sid, *args, changes]
        sql = (
            f"UPDATE sessions SET {assignments}, version = version + ${len(all_args)}::int, "
            "updated_at = now() WHERE id = $1 AND "
            + (_STORAGE_HOLDERS if storage_ops_ok else "locked_by IS NULL")
        )
        if if_version is not None:
            all_args.append(if_version)
            sql += f" AND version = ${len(all_args)}"
        sql += " RETURNING id"
        try:
            row = await (conn or self.pool).fetchrow(sql, *all_args)
        except asyncpg.CheckViolationError as exc:
            raise Unprocessable(
                "the merged metadata would exceed the 64 KiB limit; remove keys first"
            ) from exc
        if row is None:
            await self._explain_miss(session_id, if_version, conn)

    async def _explain_miss(
        self, session_id: str, if_version: int | None, conn: Conn | None
    ) -> None:
        row = await (conn or self.pool).fetchrow(
            "SELECT locked_by, version FROM sessions WHERE id = $1", session_uuid(session_id)
        )
        if row is None:
            raise NotFound(f"session {session_id} not found")
        if row["locked_by"] is not None:
            raise Locked(session_id, row["locked_by"])
        if if_version is not None and row["version"] != if_version:
            raise PreconditionFailed(
                f'session {session_id} changed since ETag "{if_version}" '
                f'(now "{row["version"]}"); GET it again and retry'
            )
        raise NotFound(f"session {session_id} not found")  # deleted in between

    async def update(
        self,
        session_id: str,
        *,
        fields: dict[str, Any],
        configuration: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        if_version: int | None,
    ) -> SessionRecord:
        columns = {"name", "description", "status", "tags"}
        parts: list[str] = []
        args: list[Any] = []
        for column, value in fields.items():
            if column not in columns:
                raise ValueError(f"not an updatable column: {column}")
            args.append(value)
            parts.append(f"{column} = ${len(args) + 1}")
        if configuration:
            args.append(configuration)
            parts.append(f"configuration = configuration || ${len(args) + 1}::jsonb")
        if metadata:
            args.append(metadata)
            parts.append(f"metadata = metadata || ${len(args) + 1}::jsonb")
        if not parts:
            parts.append("name = name")
        async with self.pool.acquire() as conn, conn.transaction():
            await self.mutate(
                session_id,
                ", ".join(parts),
                args,
                if_version=if_version,
                conn=conn,
                storage_ops_ok=True,
            )
            return await self.get(session_id, conn)

    async def increment_stats(
        self,
        session_id: str,
        deltas: dict[str, int],
        metadata: dict[str, Any] | None,
        requests: int = 1,
    ) -> None:
        """Add ``deltas`` to the counters; ``requests`` is how many API calls they sum."""
        parts = [f"{c} = {c} + ${i + 2}" for i, c in enumerate(_STAT_COLUMNS)]
        args: list[Any] = [int(deltas.get(c) or 0) for c in _STAT_COLUMNS]
        args.append(metadata or {})
        parts.append(
            f"metadata = metadata || ${len(args) + 1}::jsonb"
            " || jsonb_build_object('last_stats_update', to_jsonb(now()))"
        )
        parts.append("last_processing_time = now()")
        await self.mutate(session_id, ", ".join(parts), args, changes=requests, storage_ops_ok=True)

    async def record_model_usage(
        self, session_id: str, model_type: ModelType, model_name: str
    ) -> None:
        column = "llm_models_used" if model_type is ModelType.llm else "embedding_models_used"
        await self.mutate(
            session_id,
            f"{column} = CASE WHEN $2 = ANY({column}) THEN {column} "
            f"ELSE array_append({column}, $2) END, "
            "model_switches = model_switches + 1, last_model_switch = now()",
            [model_name],
            storage_ops_ok=True,
        )

    async def set_status(self, session_id: str, status: SessionStatus) -> None:
        await self.mutate(session_id, "status = $2", [status.value], storage_ops_ok=True)

    async def touch(self, session_id: str, conn: Conn | None = None) -> None:
        """Record activity (points written) without changing anything else."""
        await self.mutate(session_id, "name = name", [], conn=conn, storage_ops_ok=True)
