"""Retention's tables: the stored policy, and a run's pages of candidates, the sessions
it archived (retention_archived) and their restore."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from session_service.domain.models import RetentionPolicy
from session_service.domain.retention_rules import Candidate
from session_service.stores.postgres import session_uuid


class RetentionRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # the policy

    async def get_policy(self) -> RetentionPolicy:
        row = await self.pool.fetchrow("SELECT policy FROM retention_policy WHERE id = 1")
        return RetentionPolicy() if row is None else RetentionPolicy.model_validate(row["policy"])

    async def put_policy(self, policy: RetentionPolicy) -> None:
        await self.pool.execute(
            """INSERT INTO retention_policy (id, policy) VALUES (1, $1)
               ON CONFLICT (id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()""",
            policy.model_dump(mode="json"),
        )

    # a run

    async def page(self, operation_id: str, after_id: str | None, limit: int) -> list[Candidate]:
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

    async def archive(self, operation_id: str, session_ids: Sequence[str]) -> int:
        """Archive still-live, unheld sessions, remembering their status; how many of
        ``session_ids`` this run has archived (the same number on a retry)."""
        ids = [session_uuid(s) for s in session_ids]
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

    async def restore(self, operation_id: str) -> None:
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

    async def forget(self, operation_id: str) -> None:
        """A finished run's record is no longer needed."""
        await self.pool.execute(
            "DELETE FROM retention_archived WHERE operation_id = $1", operation_id
        )
