"""Merge: a new session holding the union of the sources' points, sums and unions."""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.domain.models import Distance, SessionConfiguration, SessionModel
    from session_service.domain.naming import collection_name_for
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        CopyInput,
        DiscardInput,
        EnsureLiveInput,
        FinishMergeInput,
        LockInput,
        MergeInput,
        NewSessionInput,
        UnlockInput,
    )
    from session_service.temporal.workflows.saga import COLD_SESSIONS, SagaWorkflow


@registry.MERGE.defn
class MergeWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: MergeInput) -> SessionModel:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.MERGE.kind)
        target = collection_name_for(inp.target_id)
        try:
            cold = workflow.patched(COLD_SESSIONS)
            if cold:
                saga.phase("reloading offloaded sources")
                await saga.step(
                    steps.ENSURE_LIVE,
                    EnsureLiveInput(session_ids=inp.source_ids, options=inp.options),
                    long=True,
                )
            saga.phase("locking sources")
            saga.push(
                steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=inp.source_ids)
            )
            locked = await saga.step(
                steps.LOCK_SESSIONS,
                LockInput(
                    operation_id=op, session_ids=inp.source_ids, same_vectors=True, need_live=cold
                ),
            )
            saga.phase("counting points")
            counts = await asyncio.gather(
                *(saga.step(steps.COUNT_POINTS, s.collection) for s in locked.sessions)
            )
            saga.progress.points_total = sum(counts)

            saga.phase("creating the merged session")
            first = locked.sessions[0]
            saga.push(
                steps.DISCARD_SESSION, DiscardInput(operation_id=op, session_id=inp.target_id)
            )
            await saga.step(
                steps.CREATE_SESSION,
                NewSessionInput(
                    operation_id=op,
                    session_id=inp.target_id,
                    name=inp.target_name,
                    description=inp.target_description,
                    owner_id=inp.owner_id if inp.owner_id is not None else first.owner_id,
                    configuration=SessionConfiguration(
                        vector_size=first.vector_size, distance=Distance(first.distance)
                    ),
                    tags=inp.tags or [],
                    metadata=inp.metadata,
                ),
            )

            saga.phase("copying points")
            read = 0
            for source in locked.sessions:
                offset: int | str | None = None
                while True:
                    got = await saga.step(
                        steps.COPY_POINTS,
                        CopyInput(
                            source=source.collection,
                            target=target,
                            offset=offset,
                            batch_size=inp.options.batch_size,
                            max_batches=inp.options.batches_per_call,
                        ),
                        long=True,
                    )
                    read += got.read
                    saga.progress.points_done += got.read
                    saga.progress.resumed_from_checkpoint += got.resumed_from
                    saga.report()
                    offset = got.next_offset
                    if offset is None:
                        break
            merged = await saga.step(steps.COUNT_POINTS, target)

            saga.phase("finishing")
            result = await saga.step(
                steps.FINISH_MERGE,
                FinishMergeInput(
                    operation_id=op,
                    target_id=inp.target_id,
                    source_ids=inp.source_ids,
                    archive_sources=inp.archive_sources,
                    tags=inp.tags,
                    point_count=merged,
                    collisions=read - merged,
                ),
            )
            saga.commit()
            await saga.index_after([inp.target_id])
            saga.done()
            return result
        except BaseException as err:
            await saga.fail(err)
