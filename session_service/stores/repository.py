"""Every SQL statement of the service. Returns domain models, raises domain errors.

Counters are incremented in SQL and metadata merged with jsonb ``||``, so
concurrent writers add up without read-modify-write races.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from session_service.errors import (
    Conflict,
    Locked,
    NotFound,
    Offloaded,
    PreconditionFailed,
    StartupError,
    Unprocessable,
)
from session_service.models import (
    ArtifactRef,
    ModelType,
    ModelUsage,
    Permission,
    ProcessingStats,
    RetentionPolicy,
    SessionConfiguration,
    SessionRecord,
    SessionStatus,
    Storage,
)
from session_service.retention_rules import Candidate

_SELECT = """
SELECT s.*,
       COALESCE(c.users, '{}') AS shared_with,
       COALESCE(c.perms, '{}'::jsonb) AS permissions
FROM sessions s
LEFT JOIN LATERAL (
    SELECT array_agg(user_id ORDER BY added_seq) AS users,
           jsonb_object_agg(user_id, permissions) AS perms
    FROM collaborators WHERE session_id = s.id
) c ON true
"""

if TYPE_CHECKING:
    # a bare connection or a pooled one; the stubs' generics exist only for type checking
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

_STAT_COLUMNS = ("urls_processed", "content_analyzed", "clusters_generated", "embeddings_created")


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """jsonb in and out as Python objects, for every pooled connection."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    """The pool, or a :class:`StartupError` naming ``DATABASE_URL`` (never its password)."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=init_connection, command_timeout=60
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StartupError(
            f"cannot connect to Postgres at {_where(dsn)}: {reason} (check DATABASE_URL)"
        ) from None
    assert pool is not None
    return pool


def _where(dsn: str) -> str:
    """host:port/database of a DSN, without its user and password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "(socket from the URL's query)"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "DATABASE_URL (not a URL)"
    return f"{host}{port}{parts.path}"


def _record(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        status=SessionStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        owner_id=row["owner_id"],
        shared_with=list(row["shared_with"]),
        qdrant_collection_name=row["qdrant_collection_name"],
        configuration=SessionConfiguration.model_validate(row["configuration"]),
        processing_stats=ProcessingStats(
            urls_processed=row["urls_processed"],
            content_analyzed=row["content_analyzed"],
            clusters_generated=row["clusters_generated"],
            embeddings_created=row["embeddings_created"],
            last_processing_time=row["last_processing_time"],
        ),
        model_usage_history=ModelUsage(
            llm_models_used=list(row["llm_models_used"]),
            embedding_models_used=list(row["embedding_models_used"]),
            model_switches=row["model_switches"],
            last_model_switch=row["last_model_switch"],
        ),
        tags=list(row["tags"]),
        metadata=row["metadata"],
        version=row["version"],
        permissions={k: [Permission(p) for p in v] for k, v in row["permissions"].items()},
        locked_by=row["locked_by"],
        storage=Storage(row["storage"]),
        artifact=(
            None
            if row["artifact_key"] is None
            else ArtifactRef(
                key=row["artifact_key"],
                points=row["artifact_points"],
                sha256=row["artifact_sha256"],
                size_bytes=row["artifact_size_bytes"] or 0,
                offloaded_at=row["offloaded_at"],
            )
        ),
    )


# Cold-session operations (offload, reload) move a session's points and nothing else:
# writes of its metadata (fields, status, sharing), counters and model usage go through
# while they hold it (API.md section G: they never wait); points writes still wait.
_STORAGE_HOLDERS = "(locked_by IS NULL OR locked_by LIKE 'offload-%' OR locked_by LIKE 'reload-%')"


def _uuid(session_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(session_id)
    except ValueError as exc:
        raise NotFound(f"session {session_id!r} not found") from exc


@dataclass(frozen=True)
class PageCursor:
    """Keyset position of GET /sessions: the last row's (updated_at, id)."""

    updated_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.updated_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            stamp, ident = json.loads(raw)
            when = datetime.fromisoformat(stamp)
            if when.tzinfo is None:
                raise ValueError("a page position has a time zone")
            # a forged stamp near year 1 or 9999 overflows here, not in the driver
            return cls(when.astimezone(UTC), str(uuid.UUID(ident)))
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise Unprocessable(
                "page_token is not valid: pass the token from the previous page's Link header"
            ) from exc


class _NotACollaborator(Exception):
    pass


@dataclass(frozen=True)
class SessionFilter:
    status: SessionStatus | None = None
    owner_id: str | None = None
    tags: Sequence[str] = ()
    visible_to: str | None = None


class SessionRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # reads

    async def get(self, session_id: str, conn: Conn | None = None) -> SessionRecord:
        sid = _uuid(session_id)
        row = await (conn or self.pool).fetchrow(_SELECT + " WHERE s.id = $1", sid)
        if row is None:
            raise NotFound(f"session {session_id} not found")
        return _record(row)

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord]:
        """Sessions in the order asked; NotFound names the first missing id."""
        ids = [_uuid(s) for s in session_ids]
        rows = await self.pool.fetch(_SELECT + " WHERE s.id = ANY($1::uuid[])", ids)
        by_id = {str(r["id"]): _record(r) for r in rows}
        for sid in session_ids:
            if str(_uuid(sid)) not in by_id:
                raise NotFound(f"session {sid} not found")
        return [by_id[str(_uuid(s))] for s in session_ids]

    async def get_existing(self, session_ids: Sequence[str]) -> list[SessionRecord]:
        """Those of the sessions that exist (ids that are not UUIDs name none)."""
        ids = []
        for sid in session_ids:
            try:
                ids.append(uuid.UUID(sid))
            except ValueError:
                continue
        rows = await self.pool.fetch(_SELECT + " WHERE s.id = ANY($1::uuid[])", ids)
        return [_record(r) for r in rows]

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
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY s.updated_at DESC, s.id DESC LIMIT {arg(limit)}"
        return [_record(r) for r in await self.pool.fetch(sql, *args)]

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

    async def _mutate(
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
        sid = _uuid(session_id)
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
            "SELECT locked_by, version FROM sessions WHERE id = $1", _uuid(session_id)
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
            await self._mutate(
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
        await self._mutate(
            session_id, ", ".join(parts), args, changes=requests, storage_ops_ok=True
        )

    async def record_model_usage(
        self, session_id: str, model_type: ModelType, model_name: str
    ) -> None:
        column = "llm_models_used" if model_type is ModelType.llm else "embedding_models_used"
        await self._mutate(
            session_id,
            f"{column} = CASE WHEN $2 = ANY({column}) THEN {column} "
            f"ELSE array_append({column}, $2) END, "
            "model_switches = model_switches + 1, last_model_switch = now()",
            [model_name],
            storage_ops_ok=True,
        )

    async def set_status(self, session_id: str, status: SessionStatus) -> None:
        await self._mutate(session_id, "status = $2", [status.value], storage_ops_ok=True)

    async def touch(self, session_id: str, conn: Conn | None = None) -> None:
        """Record activity (points written) without changing anything else."""
        await self._mutate(session_id, "name = name", [], conn=conn, storage_ops_ok=True)

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
                _uuid(session_id),
            )
            if row is None:
                raise NotFound(f"session {session_id} not found")
            if row["storage"] != Storage.live.value:
                raise Offloaded(session_id)
            holder = row["locked_by"]
            if holder is not None and not holder.startswith("reload-"):
                raise Locked(session_id, holder)
            yield conn

    async def share(
        self, session_id: str, user_ids: Sequence[str], permissions: Sequence[Permission]
    ) -> SessionRecord:
        perms = sorted({p.value for p in permissions})
        async with self.pool.acquire() as conn, conn.transaction():
            await self._mutate(
                session_id,
                "status = CASE WHEN status = 'deleted' THEN status ELSE 'shared' END",
                [],
                conn=conn,
                storage_ops_ok=True,
            )
            await conn.executemany(
                """INSERT INTO collaborators (session_id, user_id, permissions)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (session_id, user_id)
                   DO UPDATE SET permissions = EXCLUDED.permissions""",
                [(_uuid(session_id), user, perms) for user in dict.fromkeys(user_ids)],
            )
            return await self.get(session_id, conn)

    async def unshare(self, session_id: str, user_id: str) -> None:
        """Taking away a user who has no access is fine (as in the first service) and
        changes nothing: the version bump is rolled back."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._mutate(session_id, "name = name", [], conn=conn, storage_ops_ok=True)
                deleted = await conn.fetchval(
                    """DELETE FROM collaborators WHERE session_id = $1 AND user_id = $2
                       RETURNING user_id""",
                    _uuid(session_id),
                    user_id,
                )
                if deleted is None:
                    raise _NotACollaborator
                await conn.execute(
                    """UPDATE sessions SET status = 'active'
                       WHERE id = $1 AND status = 'shared'
                         AND NOT EXISTS (SELECT 1 FROM collaborators WHERE session_id = $1)""",
                    _uuid(session_id),
                )
        except _NotACollaborator:
            return

    # retention policy

    async def get_policy(self) -> RetentionPolicy:
        row = await self.pool.fetchrow("SELECT policy FROM retention_policy WHERE id = 1")
        return RetentionPolicy() if row is None else RetentionPolicy.model_validate(row["policy"])

    async def put_policy(self, policy: RetentionPolicy) -> None:
        await self.pool.execute(
            """INSERT INTO retention_policy (id, policy) VALUES (1, $1)
               ON CONFLICT (id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()""",
            policy.model_dump(mode="json"),
        )

    # idempotency keys

    async def claim_idempotency_key(
        self, conn: Conn, scope: str, key: str, request_hash: str, resource_id: str
    ) -> str | None:
        """Record ``key`` for ``resource_id`` inside the caller's transaction.

        Returns None when the key is new; the earlier resource id when the same
        request was seen; raises Unprocessable when the key came with another body.
        A concurrent twin blocks on the primary key until the first commits.
        """
        inserted = await conn.fetchval(
            """INSERT INTO idempotency_keys (scope, key, request_hash, resource_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING resource_id""",
            scope,
            key,
            request_hash,
            resource_id,
        )
        if inserted is not None:
            return None
        row = await conn.fetchrow(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
            scope,
            key,
        )
        assert row is not None
        if row["request_hash"] != request_hash:
            raise Unprocessable(
                f"Idempotency-Key {key!r} was already used with a different request body; "
                "use a new key for a new request"
            )
        return str(row["resource_id"])

    async def find_idempotency_key(self, scope: str, key: str) -> tuple[str, str] | None:
        """(request hash, resource id) recorded for ``key``, if any."""
        row = await self.pool.fetchrow(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
            scope,
            key,
        )
        return None if row is None else (row["request_hash"], row["resource_id"])

    async def claim_key(self, scope: str, key: str, request_hash: str, resource_id: str) -> str:
        """Record ``key`` (own transaction); the resource id that now owns it."""
        async with self.pool.acquire() as conn, conn.transaction():
            earlier = await self.claim_idempotency_key(conn, scope, key, request_hash, resource_id)
        return earlier or resource_id

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    # operation locks and saga steps (DESIGN.md saga rules 1 and 4)

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
        ids = [_uuid(s) for s in session_ids]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, locked_by FROM sessions WHERE id = ANY($1::uuid[])
                   ORDER BY id FOR UPDATE""",
                ids,
            )
            found = {str(r["id"]): r["locked_by"] for r in rows}
            for sid in session_ids:
                key = str(_uuid(sid))
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
            records = [await self.get(s, conn) for s in session_ids]
            for r in records:
                if r.status is SessionStatus.deleted and not allow_deleted:
                    raise Conflict(f"session {r.id} is deleted; restore it first")
                if need_live and r.storage is Storage.offloaded:
                    raise Conflict(f"session {r.id} was offloaded again; retry the operation")
            if same_vectors:
                params = {(r.configuration.vector_size, r.configuration.distance) for r in records}
                if len(params) > 1:
                    raise Conflict(
                        "sources have different vector parameters (vector_size, distance): "
                        + ", ".join(
                            f"{r.id}={r.configuration.vector_size}/{r.configuration.distance.value}"
                            for r in records
                        )
                    )
            await conn.execute(
                "UPDATE sessions SET locked_by = $2 WHERE id = ANY($1::uuid[])", ids, operation_id
            )
        return records

    async def unlock(self, operation_id: str, session_ids: Sequence[str]) -> None:
        """Release what ``operation_id`` holds; safe when it holds nothing."""
        await self.pool.execute(
            "UPDATE sessions SET locked_by = NULL WHERE id = ANY($1::uuid[]) AND locked_by = $2",
            [_uuid(s) for s in session_ids],
            operation_id,
        )

    async def delete_held(self, operation_id: str, session_id: str) -> None:
        """Delete a session only while ``operation_id`` holds it: the undo of a session the
        operation created, and the last step of a permanent delete. Gone already is fine."""
        await self.pool.execute(
            "DELETE FROM sessions WHERE id = $1 AND locked_by = $2", _uuid(session_id), operation_id
        )

    async def hold_unheld(
        self, operation_id: str, session_ids: Sequence[str]
    ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
        """Hold each retired session nobody else holds (a batch delete's lock: unlike
        ``lock``, not all or none). Returns (id, collection) of those now held, in the given
        order, then the ids skipped (held by another operation, or restored since the sweep
        looked at them) and the ids that don't exist. A repeat is a no-op."""
        ids = [_uuid(s) for s in session_ids]
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
        return (
            [(k, mine[k]) for k in keys if k in mine],
            [k for k in keys if k in taken],
            [k for k in keys if k not in mine and k not in taken],
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
                [_uuid(s) for s in delete_ids],
                operation_id,
            )
            await conn.execute(
                """UPDATE sessions SET locked_by = NULL
                   WHERE id = ANY($1::uuid[]) AND locked_by = $2""",
                [_uuid(s) for s in release_ids],
                operation_id,
            )

    async def finish_merge(
        self,
        operation_id: str,
        target_id: str,
        source_ids: Sequence[str],
        *,
        archive_sources: bool,
        tags: list[str] | None,
        point_count: int,
        collisions: int,
    ) -> SessionRecord:
        """Give the merged session its sums and unions, the first source's configuration
        and metadata (under the request's), archive the sources, release all.

        One transaction, guarded by the lock: a retry after a commit changes nothing.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            holder = await conn.fetchval(
                "SELECT locked_by FROM sessions WHERE id = $1 FOR UPDATE", _uuid(target_id)
            )
            if holder != operation_id:
                return await self.get(target_id, conn)
            sources = [await self.get(s, conn) for s in source_ids]

            def union(lists: list[list[str]]) -> list[str]:
                return list(dict.fromkeys(x for lst in lists for x in lst))

            stats = [s.processing_stats for s in sources]
            usage = [s.model_usage_history for s in sources]
            last_times = [t.last_processing_time for t in stats if t.last_processing_time]
            switches = [u.last_model_switch for u in usage if u.last_model_switch]
            await conn.execute(
                """UPDATE sessions SET
                       urls_processed = $2, content_analyzed = $3, clusters_generated = $4,
                       embeddings_created = $5, last_processing_time = $6,
                       llm_models_used = $7, embedding_models_used = $8,
                       model_switches = $9, last_model_switch = $10, tags = $11,
                       metadata = $13::jsonb || metadata || $12::jsonb, configuration = $14,
                       locked_by = NULL, version = version + 1, updated_at = now()
                   WHERE id = $1""",
                _uuid(target_id),
                sum(t.urls_processed for t in stats),
                sum(t.content_analyzed for t in stats),
                sum(t.clusters_generated for t in stats),
                sum(t.embeddings_created for t in stats),
                max(last_times, default=None),
                union([u.llm_models_used for u in usage]),
                union([u.embedding_models_used for u in usage]),
                sum(u.model_switches for u in usage),
                max(switches, default=None),
                tags if tags is not None else union([s.tags for s in sources])[:50],
                {
                    "merged_from": list(source_ids),
                    "merged_point_count": point_count,
                    "merge_collisions": collisions,
                },
                sources[0].metadata,
                sources[0].configuration.model_dump(mode="json"),
            )
            await conn.execute(
                """UPDATE sessions SET
                       status = CASE WHEN $3 THEN 'archived' ELSE status END,
                       version = version + 1, updated_at = CASE WHEN $3 THEN now()
                                                            ELSE updated_at END,
                       locked_by = NULL
                   WHERE id = ANY($1::uuid[]) AND locked_by = $2""",
                [_uuid(s) for s in source_ids],
                operation_id,
                archive_sources,
            )
            return await self.get(target_id, conn)

    async def finish_split(
        self,
        operation_id: str,
        source_id: str,
        parts: Sequence[tuple[str, int]],
        *,
        removed_points: int,
        archive_original: bool,
    ) -> None:
        """Set each part's counters, give it what the source carries (configuration, metadata
        under the part's, model usage, and tags when the part has none), lower the source's
        counters, release all; retry-safe by the lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            for part_id, points in parts:
                await conn.execute(
                    """UPDATE sessions AS p SET
                           urls_processed = $3, content_analyzed = $3, embeddings_created = $3,
                           configuration = src.configuration,
                           metadata = CASE
                               WHEN octet_length((src.metadata || p.metadata)::text) <= 65536
                               THEN src.metadata || p.metadata ELSE p.metadata END
                               || jsonb_build_object('split_from', $4::text),
                           llm_models_used = src.llm_models_used,
                           embedding_models_used = src.embedding_models_used,
                           model_switches = src.model_switches,
                           last_model_switch = src.last_model_switch,
                           tags = CASE WHEN cardinality(p.tags) = 0 THEN src.tags ELSE p.tags END,
                           locked_by = NULL, version = p.version + 1, updated_at = now()
                       FROM sessions AS src
                       WHERE p.id = $1 AND p.locked_by = $2 AND src.id = $5""",
                    _uuid(part_id),
                    operation_id,
                    points,
                    source_id,
                    _uuid(source_id),
                )
            await conn.execute(
                """UPDATE sessions SET
                       urls_processed = GREATEST(urls_processed - $3, 0),
                       content_analyzed = GREATEST(content_analyzed - $3, 0),
                       embeddings_created = GREATEST(embeddings_created - $3, 0),
                       status = CASE WHEN $4 THEN 'archived' ELSE status END,
                       locked_by = NULL, version = version + 1, updated_at = now()
                   WHERE id = $1 AND locked_by = $2""",
                _uuid(source_id),
                operation_id,
                removed_points,
                archive_original,
            )

    # retention

    async def retention_page(
        self, operation_id: str, after_id: str | None, limit: int
    ) -> list[Candidate]:
        """A page of sessions in id order, with each one's rank among its owner's
        active sessions (newest ``updated_at`` first) and whether this run archived it."""
        rows = await self.pool.fetch(
            """WITH page AS (
                   SELECT id, status, owner_id, created_at, updated_at, locked_by, storage
                   FROM sessions WHERE ($1::uuid IS NULL OR id > $1::uuid)
                   ORDER BY id LIMIT $2),
               ranked AS (
                   SELECT id, row_number() OVER (
                       PARTITION BY owner_id ORDER BY updated_at DESC, id DESC) AS rank
                   FROM sessions
                   WHERE status = 'active'
                     AND owner_id IN (SELECT owner_id FROM page WHERE owner_id IS NOT NULL))
               SELECT p.*, r.rank, (a.session_id IS NOT NULL) AS archived_by_this_run
               FROM page p
               LEFT JOIN ranked r ON r.id = p.id
               LEFT JOIN retention_archived a
                      ON a.session_id = p.id AND a.operation_id = $3
               ORDER BY p.id""",
            None if after_id is None else uuid.UUID(after_id),
            limit,
            operation_id,
        )
        return [
            Candidate(
                id=str(r["id"]),
                status=r["status"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                locked_by=r["locked_by"],
                owner_rank=r["rank"],
                archived_by_this_run=r["archived_by_this_run"],
                storage=r["storage"],
            )
            for r in rows
        ]

    async def retention_archive(self, operation_id: str, session_ids: Sequence[str]) -> int:
        """Archive still-live, unheld sessions, remembering their status; how many of
        ``session_ids`` this run has archived (the same number on a retry)."""
        ids = [_uuid(s) for s in session_ids]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO retention_archived (operation_id, session_id, previous_status)
                   SELECT $2, id, status FROM sessions
                   WHERE id = ANY($1::uuid[]) AND status IN ('active', 'shared')
                     AND locked_by IS NULL
                   ON CONFLICT DO NOTHING""",
                ids,
                operation_id,
            )
            await conn.execute(
                """UPDATE sessions SET status = 'archived', version = version + 1,
                       updated_at = now()
                   WHERE id IN (SELECT session_id FROM retention_archived
                                WHERE operation_id = $2 AND session_id = ANY($1::uuid[]))
                     AND status IN ('active', 'shared')""",
                ids,
                operation_id,
            )
            count: int = await conn.fetchval(
                """SELECT count(*) FROM retention_archived
                   WHERE operation_id = $2 AND session_id = ANY($1::uuid[])""",
                ids,
                operation_id,
            )
        return count

    async def retention_restore(self, operation_id: str) -> None:
        """Undo a run's archiving: the previous status back where still archived."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE sessions s SET status = a.previous_status, version = s.version + 1
                   FROM retention_archived a
                   WHERE a.operation_id = $1 AND s.id = a.session_id AND s.status = 'archived'
                     AND s.locked_by IS NULL""",
                operation_id,
            )
            await conn.execute(
                "DELETE FROM retention_archived WHERE operation_id = $1", operation_id
            )

    async def retention_forget(self, operation_id: str) -> None:
        """A finished run's record is no longer needed."""
        await self.pool.execute(
            "DELETE FROM retention_archived WHERE operation_id = $1", operation_id
        )

    # cold sessions (API.md section G)

    async def mark_offloaded(self, operation_id: str, session_id: str, ref: ArtifactRef) -> None:
        """Record the verified artifact and mark the session offloaded, while
        ``operation_id`` holds it (a repeat changes nothing)."""
        await self.pool.execute(
            """UPDATE sessions SET storage = 'offloaded', artifact_key = $3,
                   artifact_points = $4, artifact_sha256 = $5, artifact_size_bytes = $6,
                   offloaded_at = COALESCE(offloaded_at, now())
               WHERE id = $1 AND locked_by = $2""",
            _uuid(session_id),
            operation_id,
            ref.key,
            ref.points,
            ref.sha256,
            ref.size_bytes,
        )

    async def mark_live(self, operation_id: str, session_id: str, *, release: bool) -> None:
        """The session's points are in its live collection again: forget the artifact
        (the undo of an offload's mark, and a reload's commit, which also releases the
        session in the same statement). Only while ``operation_id`` holds it."""
        await self.pool.execute(
            """UPDATE sessions SET storage = 'live', artifact_key = NULL,
                   artifact_points = NULL, artifact_sha256 = NULL, artifact_size_bytes = NULL,
                   offloaded_at = NULL,
                   locked_by = CASE WHEN $3 THEN NULL ELSE locked_by END
               WHERE id = $1 AND locked_by = $2""",
            _uuid(session_id),
            operation_id,
            release,
        )

    async def export_in_flight(self, session_id: str) -> str | None:
        """The operation still writing an export of the session, if any: an offload
        would drop the collection under it."""
        found: str | None = await self.pool.fetchval(
            """SELECT operation_id FROM exports WHERE session_id = $1 AND status = 'writing'
               ORDER BY created_at DESC LIMIT 1""",
            _uuid(session_id),
        )
        return found

    async def held_artifacts(self, operation_id: str, session_ids: Sequence[str]) -> list[str]:
        """Artifact keys of the offloaded sessions among ``session_ids`` that
        ``operation_id`` holds (a permanent delete removes them with the rows)."""
        rows = await self.pool.fetch(
            """SELECT artifact_key FROM sessions
               WHERE id = ANY($1::uuid[]) AND locked_by = $2 AND artifact_key IS NOT NULL""",
            [_uuid(s) for s in session_ids],
            operation_id,
        )
        return [str(r["artifact_key"]) for r in rows]

    async def offloaded(
        self, limit: int, after_id: str | None = None, visible_to: str | None = None
    ) -> list[SessionRecord]:
        """Offloaded sessions in id order (the operator's listing), ``limit`` after
        ``after_id``; with ``visible_to``, only those the user owns or shares (filtered
        before the limit, so a page is full whenever more sessions follow)."""
        rows = await self.pool.fetch(
            _SELECT + " WHERE s.storage = 'offloaded' AND ($1::uuid IS NULL OR s.id > $1::uuid)"
            " AND ($3::text IS NULL OR s.owner_id = $3 OR EXISTS (SELECT 1 FROM collaborators x"
            " WHERE x.session_id = s.id AND x.user_id = $3))"
            " ORDER BY s.id LIMIT $2",
            None if after_id is None else _uuid(after_id),
            limit,
            visible_to,
        )
        return [_record(r) for r in rows]

    # exports

    async def export_create(
        self, export_id: str, session_id: str, owner_id: str | None, operation_id: str
    ) -> None:
        """Record an export being written; refused (Locked) while an offload holds the
        session, whose drop would cut the export short. The row lock orders this against
        an offload's hold (``lock(no_exports=True)``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            holder = await conn.fetchval(
                "SELECT locked_by FROM sessions WHERE id = $1 FOR KEY SHARE", _uuid(session_id)
            )
            if holder is not None and holder.startswith("offload-"):
                raise Locked(session_id, holder)
            await conn.execute(
                """INSERT INTO exports (export_id, session_id, owner_id, status, operation_id)
                   VALUES ($1, $2, $3, 'writing', $4) ON CONFLICT (export_id) DO NOTHING""",
                export_id,
                _uuid(session_id),
                owner_id,
                operation_id,
            )

    async def export_ready(
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

    async def export_get(self, export_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM exports WHERE export_id = $1", export_id)
        if row is None:
            raise NotFound(f"export {export_id} not found")
        return {**dict(row), "session_id": str(row["session_id"])}

    async def export_list(
        self, session_id: str | None, limit: int, after: PageCursor | None
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if session_id is not None:
            args.append(_uuid(session_id))
            where.append(f"session_id = ${len(args)}")
        if after is not None:
            args += [after.updated_at, after.id]
            where.append(f"(created_at, export_id) < (${len(args) - 1}, ${len(args)})")
        sql = "SELECT * FROM exports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(limit)
        sql += f" ORDER BY created_at DESC, export_id DESC LIMIT ${len(args)}"
        return [
            {**dict(r), "session_id": str(r["session_id"])}
            for r in await self.pool.fetch(sql, *args)
        ]

    async def export_delete(self, export_id: str) -> None:
        await self.pool.execute("DELETE FROM exports WHERE export_id = $1", export_id)

    async def finish_import(
        self,
        operation_id: str,
        session_id: str,
        stats: dict[str, Any],
        usage: dict[str, Any],
    ) -> SessionRecord:
        """Carry the original's counters and model history over and release the session."""
        await self.pool.execute(
            """UPDATE sessions SET
                   urls_processed = $3, content_analyzed = $4, clusters_generated = $5,
                   embeddings_created = $6, llm_models_used = $7, embedding_models_used = $8,
                   model_switches = $9, locked_by = NULL, version = version + 1,
                   updated_at = now()
               WHERE id = $1 AND locked_by = $2""",
            _uuid(session_id),
            operation_id,
            int(stats.get("urls_processed") or 0),
            int(stats.get("content_analyzed") or 0),
            int(stats.get("clusters_generated") or 0),
            int(stats.get("embeddings_created") or 0),
            [str(m) for m in usage.get("llm_models_used") or []],
            [str(m) for m in usage.get("embedding_models_used") or []],
            int(usage.get("model_switches") or 0),
        )
        return await self.get(session_id)
