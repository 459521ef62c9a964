"""Qdrant steps: points move here in batches, never through workflow history.

Long steps heartbeat a checkpoint after every batch and resume from it when
retried, on this worker or another one. A batch is in the engine's write-ahead
log (it survives a killed process) before its checkpoint is heartbeated; each
step flushes its target once at its end, before its result becomes the
workflow's checkpoint (a flush per batch would halve the copy rate).
"""

from __future__ import annotations

from temporalio import activity

from session_service.obs import logs
from session_service.stores.vector_store import VectorStore
from session_service.temporal import steps
from session_service.temporal.activities.meter import points_moved, points_removed
from session_service.temporal.contracts import (
    CopyCheckpoint,
    CopyIdsInput,
    CopyIdsResult,
    CopyInput,
    CopyResult,
    DropCollectionsInput,
    DropCollectionsResult,
    RemoveInput,
    RemoveResult,
)
from session_service.temporal.steps import implements

log = logs.get(__name__)


def _checkpoint() -> CopyCheckpoint | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    return CopyCheckpoint.model_validate(details[0])


def _pause(may_pause: bool, index: int, batches: list[list[int | str]]) -> bool:
    """Stop after batch ``index``: the worker is shutting down, the workflow can resume the
    step, and batches are left."""
    return may_pause and index + 1 < len(batches) and activity.is_worker_shutdown()


def _batches(ids: list[int | str], size: int) -> list[list[int | str]]:
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


class PointSteps:
    def __init__(self, vectors: VectorStore) -> None:
        self.vectors = vectors

    @implements(steps.COUNT_POINTS)
    async def count_points(self, collection: str) -> int:
        return await self.vectors.count(collection)

    @implements(steps.COPY_POINTS)
    async def copy_points(self, inp: CopyInput) -> CopyResult:
        """Scroll ``source`` from ``offset`` and upsert into ``target``, up to ``max_batches``.

        Upserts keep ids, so a batch repeated after a crash writes the same points again.
        When the worker shuts down (a deploy), the step stops after the batch in hand and
        reports how far it got: the workflow goes on from there on another worker, and
        no finished batch is copied twice.
        """
        checkpoint = _checkpoint()
        if checkpoint is not None and checkpoint.offset is None:
            # a retry after the last batch's heartbeat: the scroll is over (an offset of
            # None would scroll again from the start and count every point twice)
            await self.vectors.flush(inp.target)
            return CopyResult(read=checkpoint.read, next_offset=None, resumed_from=checkpoint.read)
        offset = checkpoint.offset if checkpoint else inp.offset
        read = checkpoint.read if checkpoint else 0
        resumed_from = read
        for _ in range(inp.max_batches):
            copied, offset = await self.vectors.copy_page(
                inp.source, inp.target, limit=inp.batch_size, offset=offset
            )
            points_moved(copied)
            read += copied
            activity.heartbeat(CopyCheckpoint(offset=offset, read=read))
            if offset is None:
                break
            if activity.is_worker_shutdown():
                log.info("copy paused for worker shutdown", source=inp.source, points=read)
                break
        await self.vectors.flush(inp.target)
        return CopyResult(read=read, next_offset=offset, resumed_from=resumed_from)

    @implements(steps.COPY_POINTS_BY_ID)
    async def copy_points_by_id(self, inp: CopyIdsInput) -> CopyIdsResult:
        """Copy the listed points that exist in ``source``; count them.

        When the workflow allows it (``may_pause``) and the worker shuts down, the step
        stops after the batch in hand and returns where to go on from (``next_batch``),
        as merge's copy does: a deploy costs neither a batch nor a retry.
        """
        checkpoint = _checkpoint()
        done = int(checkpoint.offset or 0) if checkpoint else inp.start_batch
        found = checkpoint.read if checkpoint else inp.found_before
        batches = _batches(inp.ids, inp.batch_size)
        for index in range(done, len(batches)):
            points = await self.vectors.retrieve(inp.source, batches[index])
            if points:
                await self.vectors.upsert(inp.target, points)
                points_moved(len(points))
            found += len(points)
            activity.heartbeat(CopyCheckpoint(offset=index + 1, read=found))
            if _pause(inp.may_pause, index, batches):
                log.info("split copy paused for worker shutdown", target=inp.target, points=found)
                await self.vectors.flush(inp.target)
                return CopyIdsResult(found=found, next_batch=index + 1)
        await self.vectors.flush(inp.target)
        return CopyIdsResult(found=found)

    @implements(steps.REMOVE_POINTS)
    async def remove_points(self, inp: RemoveInput) -> RemoveResult:
        """Remove from ``source`` the listed points that were copied somewhere.

        The count comes from the copies, which don't change, so a batch repeated
        after a crash counts the same again. Pauses on a worker's shutdown as
        :meth:`copy_points_by_id` does, when the workflow allows it.
        """
        checkpoint = _checkpoint()
        done = int(checkpoint.offset or 0) if checkpoint else inp.start_batch
        removed = checkpoint.read if checkpoint else inp.removed_before
        batches = _batches(inp.ids, inp.batch_size)
        for index in range(done, len(batches)):
            copied: set[int | str] = set()
            for target in inp.copied_to:
                copied |= await self.vectors.existing_ids(target, batches[index])
            await self.vectors.delete_ids(inp.source, [i for i in batches[index] if i in copied])
            removed += len(copied)
            points_removed(len(copied))
            activity.heartbeat(CopyCheckpoint(offset=index + 1, read=removed))
            if _pause(inp.may_pause, index, batches):
                log.info("split removal paused for worker shutdown", source=inp.source)
                await self.vectors.flush(inp.source)
                return RemoveResult(removed=removed, next_batch=index + 1)
        await self.vectors.flush(inp.source)
        return RemoveResult(removed=removed)

    @implements(steps.DROP_COLLECTION)
    async def drop_collection(self, collection: str) -> None:
        await self.vectors.drop_collection(collection)

    @implements(steps.DROP_COLLECTIONS)
    async def drop_collections(self, inp: DropCollectionsInput) -> DropCollectionsResult:
        """A batch delete's irreversible step: each session's collection, one by one.

        A session whose drop fails is reported, not retried here, so that one bad
        collection can't hold up the others (its row is released, not deleted, and the
        next sweep tries again). Heartbeats the outcomes so far; a retry resumes after
        them, and dropping again what is already gone is a no-op.
        """
        details = activity.info().heartbeat_details
        out = (
            DropCollectionsResult.model_validate(details[0]) if details else DropCollectionsResult()
        )
        for session in inp.sessions[len(out.dropped) + len(out.failures) :]:
            try:
                await self.vectors.drop_collection(session.collection)
            except Exception as exc:  # noqa: BLE001 - reported per session, the others go on
                out.failures.append(
                    {"session_id": session.id, "error": str(exc) or type(exc).__name__}
                )
            else:
                out.dropped.append(session.id)
            activity.heartbeat(out)
        return out
