"""The collaborators table: sharing a session with users, and taking it back."""

from __future__ import annotations

from collections.abc import Sequence

from session_service.domain.models import Permission, SessionRecord
from session_service.stores.postgres import session_uuid
from session_service.stores.session_rows import SessionRows


class _NotACollaborator(Exception):
    pass


class CollaboratorRows:
    """Sharing changes the session too (status, version): through ``sessions``."""

    def __init__(self, sessions: SessionRows) -> None:
        self.sessions = sessions
        self.pool = sessions.pool

    async def share(
        self, session_id: str, user_ids: Sequence[str], permissions: Sequence[Permission]
    ) -> SessionRecord:
        perms = sorted({p.value for p in permissions})
        async with self.pool.acquire() as conn, conn.transaction():
            await self.sessions.mutate(
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
                [(session_uuid(session_id), user, perms) for user in dict.fromkeys(user_ids)],
            )
            return await self.sessions.get(session_id, conn)

    async def unshare(self, session_id: str, user_id: str) -> None:
        """Taking away a user who has no access is fine (as in the first service) and
        changes nothing: the version bump is rolled back."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self.sessions.mutate(
                    session_id, "name = name", [], conn=conn, storage_ops_ok=True
                )
                deleted = await conn.fetchval(
                    """DELETE FROM collaborators WHERE session_id = $1 AND user_id = $2
                       RETURNING user_id""",
                    session_uuid(session_id),
                    user_id,
                )
                if deleted is None:
                    raise _NotACollaborator
                await conn.execute(
                    """UPDATE sessions SET status = 'active'
                       WHERE id = $1 AND status = 'shared'
                         AND NOT EXISTS (SELECT 1 FROM collaborators WHERE session_id = $1)""",
                    session_uuid(session_id),
                )
        except _NotACollaborator:
            return
