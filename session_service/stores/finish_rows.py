"""The last write of a merge, a split and an import: each gives the sessions it holds
what :mod:`session_service.domain.session_rules` computes, and releases them, in one
transaction guarded by the hold (a retry after the commit changes nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from session_service.domain import session_rules as rules
from session_service.domain.models import SessionRecord
from session_service.stores.postgres import read, session_uuid

if TYPE_CHECKING:
    from session_service.stores.postgres import Conn


def _counters(row: asyncpg.Record) -> rules.Counters:
    return rules.Counters(
        urls_processed=row["urls_processed"],
        content_analyzed=row["content_analyzed"],
        clusters_generated=row["clusters_generated"],
        embeddings_created=row["embeddings_created"],
    )


class FinishRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

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
        and metadata (under the request's), archive the sources, release all."""
        async with self.pool.acquire() as conn, conn.transaction():
            holder = await conn.fetchval(
                "SELECT locked_by FROM sessions WHERE id = $1 FOR UPDATE", session_uuid(target_id)
            )
            if holder != operation_id:
                return await read(conn, target_id)
            target = await read(conn, target_id)
            sources = [await read(conn, s) for s in source_ids]
            stats = rules.merged_stats([s.processing_stats for s in sources])
            usage = rules.merged_usage([s.model_usage_history for s in sources])
            await conn.execute(
                """UPDATE sessions SET
                       urls_processed = $2, content_analyzed = $3, clusters_generated = $4,
                       embeddings_created = $5, last_processing_time = $6,
                       llm_models_used = $7, embedding_models_used = $8,
                       model_switches = $9, last_model_switch = $10, tags = $11,
                       metadata = $12::jsonb, configuration = $13,
                       locked_by = NULL, version = version + 1, updated_at = now()
                   WHERE id = $1""",
                session_uuid(target_id),
                stats.urls_processed,
                stats.content_analyzed,
                stats.clusters_generated,
                stats.embeddings_created,
                stats.last_processing_time,
                usage.llm_models_used,
                usage.embedding_models_used,
                usage.model_switches,
                usage.last_model_switch,
                rules.merged_tags(tags, [s.tags for s in sources]),
                rules.merged_metadata(
                    sources[0].metadata,
                    target.metadata,
                    source_ids,
                    point_count=point_count,
                    collisions=collisions,
                ),
                sources[0].configuration.model_dump(mode="json"),
            )
            await conn.execute(
                """UPDATE sessions SET
                       status = CASE WHEN $3 THEN 'archived' ELSE status END,
                       version = version + 1, updated_at = CASE WHEN $3 THEN now()
                                                            ELSE updated_at END,
                       locked_by = NULL
                   WHERE id = ANY($1::uuid[]) AND locked_by = $2""",
                [session_uuid(s) for s in source_ids],
                operation_id,
                archive_sources,
            )
            return await read(conn, target_id)

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
        counters, release all."""
        async with self.pool.acquire() as conn, conn.transaction():
            src = await conn.fetchrow(
                "SELECT * FROM sessions WHERE id = $1", session_uuid(source_id)
            )
            for part_id, points in parts:
                part = await conn.fetchrow(
                    """SELECT p.*, octet_length((s.metadata || p.metadata)::text) AS inherited
                       FROM sessions p, sessions s
                       WHERE p.id = $1 AND p.locked_by = $2 AND s.id = $3
                       FOR NO KEY UPDATE OF p""",
                    session_uuid(part_id),
                    operation_id,
                    session_uuid(source_id),
                )
                if src is not None and part is not None:
                    await self._write_part(conn, operation_id, source_id, src, part, points)
            row = await conn.fetchrow(
                "SELECT * FROM sessions WHERE id = $1 AND locked_by = $2 FOR NO KEY UPDATE",
                session_uuid(source_id),
                operation_id,
            )
            if row is None:
                return
            left = rules.split_source_counters(_counters(row), removed_points)
            await conn.execute(
                """UPDATE sessions SET
                       urls_processed = $3, content_analyzed = $4, embeddings_created = $5,
                       status = CASE WHEN $6 THEN 'archived' ELSE status END,
                       locked_by = NULL, version = version + 1, updated_at = now()
                   WHERE id = $1 AND locked_by = $2""",
                session_uuid(source_id),
                operation_id,
                left.urls_processed,
                left.content_analyzed,
                left.embeddings_created,
                archive_original,
            )

    @staticmethod
    async def _write_part(
        conn: Conn,
        operation_id: str,
        source_id: str,
        src: asyncpg.Record,
        part: asyncpg.Record,
        points: int,
    ) -> None:
        counters = rules.split_part_counters(points, _counters(part))
        await conn.execute(
            """UPDATE sessions SET
                   urls_processed = $3, content_analyzed = $4, embeddings_created = $5,
                   configuration = $6, metadata = $7::jsonb,
                   llm_models_used = $8, embedding_models_used = $9,
                   model_switches = $10, last_model_switch = $11, tags = $12,
                   locked_by = NULL, version = version + 1, updated_at = now()
               WHERE id = $1 AND locked_by = $2""",
            part["id"],
            operation_id,
            counters.urls_processed,
            counters.content_analyzed,
            counters.embeddings_created,
            src["configuration"],
            rules.split_part_metadata(
                src["metadata"], part["metadata"], source_id, inherited_bytes=part["inherited"]
            ),
            src["llm_models_used"],
            src["embedding_models_used"],
            src["model_switches"],
            src["last_model_switch"],
            rules.split_part_tags(part["tags"], src["tags"]),
        )

    async def finish_import(
        self,
        operation_id: str,
        session_id: str,
        stats: dict[str, Any],
        usage: dict[str, Any],
    ) -> SessionRecord:
        """Carry the original's counters and model history over and release the session."""
        counters = rules.imported_counters(stats)
        history = rules.imported_usage(usage)
        await self.pool.execute(
            """UPDATE sessions SET
                   urls_processed = $3, content_analyzed = $4, clusters_generated = $5,
                   embeddings_created = $6, llm_models_used = $7, embedding_models_used = $8,
                   model_switches = $9, locked_by = NULL, version = version + 1,
                   updated_at = now()
               WHERE id = $1 AND locked_by = $2""",
            session_uuid(session_id),
            operation_id,
            counters.urls_processed,
            counters.content_analyzed,
            counters.clusters_generated,
            counters.embeddings_created,
            history.llm_models_used,
            history.embedding_models_used,
            history.model_switches,
        )
        return await read(self.pool, session_id)
