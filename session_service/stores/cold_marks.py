"""Cold sessions (API.md section G): marking a session offloaded (its artifact) or live
again, the artifacts a delete must remove, and the operator's listing."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from session_service.domain.models import ArtifactRef, SessionRecord
from session_service.stores.postgres import SELECT, record, session_uuid


class ColdMarks:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def mark_offloaded(self, operation_id: str, session_id: str, ref: ArtifactRef) -> None:
        """Record the verified artifact and mark the session offloaded, while
        ``operation_id`` holds it (a repeat changes nothing)."""
        await self.pool.execute(
            """UPDATE sessions SET storage = 'offloaded', artifact_key = $3,
                   artifact_points = $4, artifact_sha256 = $5, artifact_size_bytes = $6,
                   offloaded_at = COALESCE(offloaded_at, now())
               WHERE id = $1 AND locked_by = $2""",
            session_uuid(session_id),
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
            session_uuid(session_id),
            operation_id,
            release,
        )

    async def held_artifacts(self, operation_id: str, session_ids: Sequence[str]) -> list[str]:
        """Artifact keys of the offloaded sessions among ``session_ids`` that
        ``operation_id`` holds (a permanent delete removes them with the rows)."""
        rows = await self.pool.fetch(
            """SELECT artifact_key FROM sessions
               WHERE id = ANY($1::uuid[]) AND locked_by = $2 AND artifact_key IS NOT NULL""",
            [session_uuid(s) for s in session_ids],
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
            SELECT + " WHERE s.storage = 'offloaded' AND ($1::uuid IS NULL OR s.id > $1::uuid)"
            " AND ($3::text IS NULL OR s.owner_id = $3 OR EXISTS (SELECT 1 FROM collaborators x"
            " WHERE x.session_id = s.id AND x.user_id = $3))"
            " ORDER BY s.id LIMIT $2",
            None if after_id is None else session_uuid(after_id),
            limit,
            visible_to,
        )
        return [record(r) for r in rows]
