"""Every SQL statement of the operations record (the ``operations`` table) and of the
idempotency-key sweep.

A row is written three times over an operation's life: by the API when it starts the
workflow (so the record exists even if no worker ever runs it), by the workflow's first
activity (started, and the only start write of operations that a workflow or schedule
starts), and by its last activity (how it ended). Each write is an upsert that a retry
may repeat.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from session_service.domain.errors import Unprocessable
from session_service.domain.operation_records import OperationEnd, OperationStart

_COLUMNS = (
    "id, kind, status, session_ids, owner_id, started_by, cancel_permission, cancel_ids, "
    "summary, run_id, progress, result, error_type, error_message, created_at, started_at, "
    "finished_at"
)


def uuids(ids: Sequence[str]) -> list[uuid.UUID]:
    """The ids that are UUIDs (every session id is); anything else names no session."""
    out = []
    for sid in ids:
        try:
            out.append(uuid.UUID(sid))
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class OperationRow:
    """One row of ``operations``, as read."""

    id: str
    kind: str
    status: str
    session_ids: list[str]
    owner_id: str | None
    started_by: str | None
    cancel_permission: str | None
    cancel_ids: list[str]
    summary: str | None
    run_id: str | None
    progress: dict[str, Any] | None
    result: Any
    error_type: str | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status != "running"

    @classmethod
    def of(cls, row: asyncpg.Record) -> OperationRow:
        values = dict(row)
        values["session_ids"] = [str(s) for s in row["session_ids"]]
        values["cancel_ids"] = [str(s) for s in row["cancel_ids"]]
        return cls(**values)


@dataclass(frozen=True)
class OperationCursor:
    """Keyset position of GET /operations: the last row's (created_at, id)."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> OperationCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            stamp, ident = json.loads(raw)
            when = datetime.fromisoformat(stamp)
            if when.tzinfo is None or not isinstance(ident, str) or "\x00" in ident:
                raise ValueError("not a page position")
            return cls(when.astimezone(UTC), ident)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise Unprocessable(
                "page_token is not valid: pass the token from the previous page's Link header"
            ) from exc


@dataclass(frozen=True)
class OperationFilter:
    kind: str | None = None
    status: str | None = None
    session_id: uuid.UUID | None = None
    visible_to: str | None = None  # a user: only operations they may see (API.md E)


# API.md E in SQL: a user sees an operation when they can read every session it names
# that exists (owner, or a collaborator with any permission), or, when none exists, when
# they started it. Mirrors OperationService.visible (tests check both).
_VISIBLE = """(
    CASE WHEN EXISTS (SELECT 1 FROM sessions s WHERE s.id = ANY(o.session_ids))
         THEN NOT EXISTS (
             SELECT 1 FROM sessions s
             WHERE s.id = ANY(o.session_ids)
               AND s.owner_id IS DISTINCT FROM {user}
               AND NOT EXISTS (
                   SELECT 1 FROM collaborators c
                   WHERE c.session_id = s.id AND c.user_id = {user}
                     AND cardinality(c.permissions) > 0))
         ELSE o.started_by = {user}
    END)"""


class OperationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # writes

    async def begin(
        self,
        *,
        operation_id: str,
        kind: str,
        session_ids: Sequence[str],
        owner_id: str | None,
        started_by: str | None,
        cancel_permission: str | None,
        cancel_ids: Sequence[str],
        summary: str,
        restart_from: Collection[str] = (),
    ) -> OperationRow | None:
        """The API's write, before it starts the workflow. Returns None when the row is
        new (or was reset for a new run: its status is in ``restart_from``); the row
        already there otherwise (a repeat: the caller must not start it again)."""
        args = (
            operation_id,
            kind,
            uuids(session_ids),
            owner_id,
            started_by,
            cancel_permission,
            uuids(cancel_ids),
            summary,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO operations (id, kind, status, session_ids, owner_id, started_by,
                                           cancel_permission, cancel_ids, summary)
                   VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (id) DO NOTHING RETURNING id""",
                *args,
            )
            if inserted is not None:
                return None
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM operations WHERE id = $1 FOR UPDATE", operation_id
            )
            assert row is not None
            if row["status"] not in restart_from:
                return OperationRow.of(row)
            await conn.execute(
                """UPDATE operations SET
                       kind = $2, status = 'running', session_ids = $3, owner_id = $4,
                       started_by = $5, cancel_permission = $6, cancel_ids = $7, summary = $8,
                       run_id = NULL, progress = NULL, result = NULL, error_type = NULL,
                       error_message = NULL, created_at = now(), started_at = NULL,
                       finished_at = NULL
                   WHERE id = $1""",
                *args,
            )
            return None

    async def forget(self, operation_id: str) -> None:
        """Drop the row of a start that Temporal refused (no workflow runs it)."""
        await self.pool.execute(
            "DELETE FROM operations WHERE id = $1 AND run_id IS NULL AND status = 'running'",
            operation_id,
        )

    async def started(self, inp: OperationStart, created_at: datetime | None = None) -> None:
        """The workflow's first activity: the row exists and says when a worker took it.

        Creates it for operations the API did not start (scheduled sweeps, children,
        reloads a merge asks for); resets a finished row that an earlier run chain of the
        same id left (ids that may run again: delete, reload)."""
        await self.pool.execute(
            """INSERT INTO operations (id, kind, status, session_ids, owner_id, started_by,
                                       cancel_permission, cancel_ids, summary, run_id,
                                       started_at, created_at)
               VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, now(),
                       COALESCE($10, now()))
               ON CONFLICT (id) DO UPDATE SET
                   run_id = EXCLUDED.run_id,
                   started_at = CASE WHEN operations.finished_at IS NOT NULL
                                      AND operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                     THEN now()
                                     ELSE COALESCE(operations.started_at, now()) END,
                   status = CASE WHEN operations.finished_at IS NOT NULL
                                  AND operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                 THEN 'running' ELSE operations.status END,
                   finished_at = CASE WHEN operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                      THEN NULL ELSE operations.finished_at END,
                   result = CASE WHEN operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                 THEN NULL ELSE operations.result END,
                   error_type = CASE WHEN operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                     THEN NULL ELSE operations.error_type END,
                   error_message = CASE WHEN operations.run_id IS DISTINCT FROM EXCLUDED.run_id
                                        THEN NULL ELSE operations.error_message END""",
            inp.operation_id,
            inp.kind,
            uuids(inp.session_ids),
            inp.owner_id,
            inp.started_by,
            inp.cancel_permission,
            uuids(inp.cancel_ids),
            inp.summary,
            inp.run_id,
            created_at,
        )

    async def ended(self, inp: OperationEnd) -> None:
        """The workflow's last activity (or a reconciliation of a run Temporal ended
        without it, e.g. terminated): how it ended. Creates the row if it is missing."""
        await self.pool.execute(
            """INSERT INTO operations (id, kind, status, session_ids, run_id, progress, result,
                                       error_type, error_message, started_at, finished_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now())
               ON CONFLICT (id) DO UPDATE SET
                   status = EXCLUDED.status,
                   run_id = COALESCE(EXCLUDED.run_id, operations.run_id),
                   progress = COALESCE(EXCLUDED.progress, operations.progress),
                   result = EXCLUDED.result,
                   error_type = EXCLUDED.error_type,
                   error_message = EXCLUDED.error_message,
                   finished_at = COALESCE(operations.finished_at, now())""",
            inp.operation_id,
            inp.kind,
            inp.status,
            uuids(inp.session_ids),
            inp.run_id,
            inp.progress,
            inp.result,
            inp.error_type,
            inp.error_message,
        )

    # reads

    async def get(self, operation_id: str) -> OperationRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM operations WHERE id = $1", operation_id
        )
        return None if row is None else OperationRow.of(row)

    async def search(
        self, flt: OperationFilter, limit: int, after: OperationCursor | None = None
    ) -> list[OperationRow]:
        """One page, newest first; every filter (visibility included) is in the query, so
        a page is full whenever enough rows match."""
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.kind is not None:
            where.append(f"o.kind = {arg(flt.kind)}")
        if flt.status is not None:
            where.append(f"o.status = {arg(flt.status)}")
        if flt.session_id is not None:
            where.append(f"o.session_ids @> ARRAY[{arg(flt.session_id)}::uuid]")
        if flt.visible_to is not None:
            where.append(_VISIBLE.format(user=arg(flt.visible_to)))
        if after is not None:
            where.append(f"(o.created_at, o.id) < ({arg(after.created_at)}, {arg(after.id)})")
        sql = f"SELECT {', '.join('o.' + c.strip() for c in _COLUMNS.split(','))} FROM operations o"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY o.created_at DESC, o.id DESC LIMIT {arg(limit)}"
        return [OperationRow.of(r) for r in await self.pool.fetch(sql, *args)]

    # idempotency keys

    async def sweep_idempotency_keys(self, ttl: timedelta) -> int:
        """Delete the keys older than ``ttl``; how many went."""
        done = await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval", ttl
        )
        return int(done.split()[-1])
