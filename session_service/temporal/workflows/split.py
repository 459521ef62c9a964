"""Split: new sessions from listed points of one source; points leave the source last."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.domain.models import Distance, SessionConfiguration
    from session_service.domain.naming import collection_name_for
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        CopyIdsInput,
        DiscardInput,
        EnsureLiveInput,
        FinishSplitInput,
        LockInput,
        NewSessionInput,
        RemoveInput,
        SplitInput,
        SplitPart,
        SplitPartResult,
        SplitResult,
        UnlockInput,
    )
    from session_service.temporal.workflows.saga import COLD_SESSIONS, Saga, SagaWorkflow

# Splits started before it copy each part in one step, whatever a worker's shutdown.
PAUSE_ON_DRAIN = "split-copy-pauses-on-drain"
REMOVAL_PAUSES_ON_DRAIN = "split-removal-pauses-on-drain"


@registry.SPLIT.defn
class SplitWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: SplitInput) -> SplitResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.SPLIT.kind)
        try:
            cold = workflow.patched(COLD_SESSIONS)
            if cold:
                saga.phase("reloading the offloaded source")
                await saga.step(
                    steps.ENSURE_LIVE,
                    EnsureLiveInput(session_ids=[inp.source_id], options=inp.options),
                    long=True,
                )
            saga.phase("locking the source")
            saga.push(
                steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[inp.source_id])
            )
            locked = await saga.step(
                steps.LOCK_SESSIONS,
                LockInput(operation_id=op, session_ids=[inp.source_id], need_live=cold),
            )
            source = locked.sessions[0]
            config = SessionConfiguration(
                vector_size=source.vector_size, distance=Distance(source.distance)
            )
            saga.progress.points_total = sum(len(set(p.point_ids)) for p in inp.parts)

            parts: list[SplitPartResult] = []
            skipped_points = skipped_parts = 0
            for index, part in enumerate(inp.parts):
                saga.phase(f"copying part {index + 1} of {len(inp.parts)}")
                undo = DiscardInput(operation_id=op, session_id=part.session_id)
                saga.push(steps.DISCARD_SESSION, undo)
                await saga.step(
                    steps.CREATE_SESSION,
                    NewSessionInput(
                        operation_id=op,
                        session_id=part.session_id,
                        name=part.name,
                        description=part.description,
                        owner_id=source.owner_id,
                        configuration=config,
                        tags=part.tags,
                        metadata=part.metadata,
                    ),
                )
                found = await self._copy_part(saga, source.collection, part, inp)
                requested = len(set(part.point_ids))
                skipped_points += requested - found
                saga.progress.points_done += requested
                saga.report()
                if found == 0:
                    saga.pop()
                    await saga.undo_one(steps.DISCARD_SESSION, undo)
                    skipped_parts += 1
                    continue
                parts.append(SplitPartResult(session_id=part.session_id, points=found))

            removed = 0
            if inp.remove_points and parts:
                saga.phase("removing points from the source")
                saga.commit()  # the irreversible step: from here on, only forward
                removed = await self._remove_points(saga, source.collection, parts, inp)

            saga.phase("finishing")
            finish = FinishSplitInput(
                operation_id=op,
                source_id=inp.source_id,
                parts=parts,
                removed_points=removed,
                archive_original=inp.archive_original,
            )
            if inp.remove_points and parts:
                await saga.final_step(steps.FINISH_SPLIT, finish)
            else:
                await saga.step(steps.FINISH_SPLIT, finish)
            saga.commit()
            await saga.index_after([p.session_id for p in parts])
            saga.done()
            return SplitResult(
                new_sessions=[p.session_id for p in parts],
                assigned_points=sum(p.points for p in parts),
                removed_points=removed,
                skipped_points=skipped_points,
                skipped_parts=skipped_parts,
            )
        except BaseException as err:
            await saga.fail(err)

    async def _copy_part(self, saga: Saga, source: str, part: SplitPart, inp: SplitInput) -> int:
        """The part's points found in the source and copied (splits started before the
        patch copy in one step only)."""
        pausable = workflow.patched(PAUSE_ON_DRAIN)

        async def call(start: int, found: int) -> tuple[int, int | None]:
            got = await saga.step(
                steps.COPY_POINTS_BY_ID,
                CopyIdsInput(
                    source=source,
                    target=collection_name_for(part.session_id),
                    ids=part.point_ids,
                    batch_size=inp.options.batch_size,
                    may_pause=pausable,
                    start_batch=start,
                    found_before=found,
                ),
                long=True,
            )
            return got.found, got.next_batch

        return await until_done(call)

    async def _remove_points(
        self, saga: Saga, source: str, parts: list[SplitPartResult], inp: SplitInput
    ) -> int:
        """The copied points, removed from the source past the point of no return, in final
        steps (splits started before the patch remove in one step only)."""
        pausable = workflow.patched(REMOVAL_PAUSES_ON_DRAIN)

        async def call(start: int, removed: int) -> tuple[int, int | None]:
            gone = await saga.final_step(
                steps.REMOVE_POINTS,
                RemoveInput(
                    source=source,
                    ids=[i for p in inp.parts for i in p.point_ids],
                    copied_to=[collection_name_for(p.session_id) for p in parts],
                    batch_size=inp.options.batch_size,
                    may_pause=pausable,
                    start_batch=start,
                    removed_before=removed,
                ),
                long=True,
            )
            return gone.removed, gone.next_batch

        return await until_done(call)


async def until_done(call: Callable[[int, int], Awaitable[tuple[int, int | None]]]) -> int:
    """Runs a step that a worker's shutdown may pause until it is done: each call starts at
    the batch where the previous one stopped, with the count so far; the last count."""
    start, count = 0, 0
    while True:
        count, next_batch = await call(start, count)
        if next_batch is None:
            return count
        if next_batch <= start:  # a step that doesn't advance would loop for ever
            raise ValueError(f"a paused step went back from batch {start} to {next_batch}")
        start = next_batch
