"""The Postgres plumbing every repository shares: the pool and its connections, the
connection type, session ids as UUIDs, a session row as a :class:`SessionRecord`, and
the keyset position of a listing page."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from session_service.domain.errors import NotFound, StartupError, Unprocessable
from session_service.domain.models import (
    ArtifactRef,
    ModelUsage,
    Permission,
    ProcessingStats,
    SessionConfiguration,
    SessionRecord,
    SessionStatus,
    Storage,
)

if TYPE_CHECKING:
    # a bare connection or a pooled one; the stubs' generics exist only for type checking
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]


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


def session_uuid(session_id: str) -> uuid.UUID:
    """A session id as the column holds it; an id that is not a UUID names no session."""
    try:
        return uuid.UUID(session_id)
    except ValueError as exc:
        raise NotFound(f"session {session_id!r} not found") from exc


@dataclass(frozen=True)
class PageCursor:
    """Keyset position of a listing (GET /sessions, GET /exports): the last row's
    (time, id)."""

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


# session rows, as every repository reads them

SELECT = """
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


def record(row: asyncpg.Record) -> SessionRecord:
    """A row of :data:`SELECT` as the domain's session."""
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


async def read(conn: Conn | asyncpg.Pool, session_id: str) -> SessionRecord:
    """One session, through ``conn`` (a transaction's, or the pool); NotFound if absent."""
    row = await conn.fetchrow(SELECT + " WHERE s.id = $1", session_uuid(session_id))
    if row is None:
        raise NotFound(f"session {session_id} not found")
    return record(row)
