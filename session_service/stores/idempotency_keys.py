"""The idempotency_keys table: which resource an Idempotency-Key already names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from session_service.domain.errors import Unprocessable

if TYPE_CHECKING:
    from session_service.stores.postgres import Conn


@dataclass(frozen=True)
class KeyRecord:
    """What a key was first used for: the request's hash and the resource it made."""

    request_hash: str
    resource_id: str


class IdempotencyKeys:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim_in(
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

    async def find(self, scope: str, key: str) -> KeyRecord | None:
        """What ``key`` was recorded for, if anything."""
        row = await self.pool.fetchrow(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
            scope,
            key,
        )
        return None if row is None else KeyRecord(row["request_hash"], row["resource_id"])

    async def claim(self, scope: str, key: str, request_hash: str, resource_id: str) -> str:
        """Record ``key`` (own transaction); the resource id that now owns it."""
        async with self.pool.acquire() as conn, conn.transaction():
            earlier = await self.claim_in(conn, scope, key, request_hash, resource_id)
        return earlier or resource_id
