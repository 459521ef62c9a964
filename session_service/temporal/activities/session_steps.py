"""Postgres steps of the sagas: lock, create, finish, discard, delete (one or a batch)."""

from __future__ import annotations

from session_service.domain.models import SessionModel
from session_service.stores.artifacts import ArtifactStore
from session_service.stores.database import Postgres
from session_service.stores.vector_store import VectorStore, collection_name_for
from session_service.temporal import steps
from session_service.temporal.activities.errors import business_errors
from session_service.temporal.contracts import (
    DeleteRowInput,
    DeleteRowsInput,
    DiscardInput,
    FinishMergeInput,
    FinishSplitInput,
    HeldSession,
    HoldInput,
    HoldResult,
    LockInput,
    LockResult,
    NewSessionInput,
    SessionSnapshot,
    UnlockInput,
)
from session_service.temporal.steps import implements


class SessionSteps:
    def __init__(
        self, pg: Postgres, vectors: VectorStore, store: ArtifactStore | None = None
    ) -> None:
        self.rows = pg.sessions
        self.locks = pg.locks
        self.finishes = pg.finishes
        self.cold = pg.cold
        self.vectors = vectors
        self.store = store  # where offloaded sessions' artifacts are (section G)

    @implements(steps.LOCK_SESSIONS)
    async def lock_sessions(self, inp: LockInput) -> LockResult:
        with business_errors():
            records = await self.locks.lock(
                inp.operation_id,
                inp.session_ids,
                same_vectors=inp.same_vectors,
                allow_deleted=inp.allow_deleted,
                need_live=inp.need_live,
            )
        return LockResult(
            sessions=[
                SessionSnapshot(
                    id=r.id,
                    collection=r.qdrant_collection_name,
                    vector_size=r.configuration.vector_size,
                    distance=r.configuration.distance.value,
                    status=r.status.value,
                    owner_id=r.owner_id,
                )
                for r in records
            ]
        )

    @implements(steps.UNLOCK_SESSIONS)
    async def unlock_sessions(self, inp: UnlockInput) -> None:
        await self.locks.unlock(inp.operation_id, inp.session_ids)

    @implements(steps.CREATE_SESSION)
    async def create_session(self, inp: NewSessionInput) -> None:
        """Row (held by the operation) and collection; both "create if missing"."""
        async with self.rows.pool.acquire() as conn:
            await self.rows.insert(
                conn,
                session_id=inp.session_id,
                name=inp.name,
                description=inp.description,
                owner_id=inp.owner_id,
                configuration=inp.configuration,
                tags=inp.tags,
                metadata=inp.metadata,
                collection_name=collection_name_for(inp.session_id),
                locked_by=inp.operation_id,
            )
        await self.vectors.ensure_collection(
            collection_name_for(inp.session_id),
            inp.configuration.vector_size,
            inp.configuration.distance.value,
        )

    @implements(steps.DISCARD_SESSION)
    async def discard_session(self, inp: DiscardInput) -> None:
        """Undo of create_session: collection and row gone, if present and still ours."""
        await self.vectors.drop_collection(collection_name_for(inp.session_id))
        await self.locks.delete_held(inp.operation_id, inp.session_id)

    @implements(steps.FINISH_MERGE)
    async def finish_merge(self, inp: FinishMergeInput) -> SessionModel:
        record = await self.finishes.finish_merge(
            inp.operation_id,
            inp.target_id,
            inp.source_ids,
            archive_sources=inp.archive_sources,
            tags=inp.tags,
            point_count=inp.point_count,
            collisions=inp.collisions,
        )
        return record.public()

    @implements(steps.FINISH_SPLIT)
    async def finish_split(self, inp: FinishSplitInput) -> None:
        await self.finishes.finish_split(
            inp.operation_id,
            inp.source_id,
            [(p.session_id, p.points) for p in inp.parts],
            removed_points=inp.removed_points,
            archive_original=inp.archive_original,
        )

    @implements(steps.DELETE_SESSION_ROW)
    async def delete_session_row(self, inp: DeleteRowInput) -> None:
        await self._drop_artifacts(inp.operation_id, [inp.session_id])
        await self.locks.delete_held(inp.operation_id, inp.session_id)

    async def _drop_artifacts(self, operation_id: str, session_ids: list[str]) -> None:
        """An offloaded session's points are in its artifact: it goes before the row that
        names it (a retry after the row is gone finds nothing left to delete)."""
        if self.store is None:
            return
        for key in await self.cold.held_artifacts(operation_id, session_ids):
            self.store.delete(key)

    @implements(steps.HOLD_FOR_DELETE)
    async def hold_for_delete(self, inp: HoldInput) -> HoldResult:
        """A batch delete holds what it can: a session held elsewhere is left to its holder."""
        hold = await self.locks.hold_unheld(inp.operation_id, inp.session_ids)
        return HoldResult(
            sessions=[HeldSession(id=sid, collection=name) for sid, name in hold.held],
            held_by_others=hold.held_by_others,
            missing=hold.missing,
        )

    @implements(steps.DELETE_SESSION_ROWS)
    async def delete_session_rows(self, inp: DeleteRowsInput) -> None:
        await self._drop_artifacts(inp.operation_id, inp.delete_ids)
        await self.locks.delete_held_many(inp.operation_id, inp.delete_ids, inp.release_ids)
