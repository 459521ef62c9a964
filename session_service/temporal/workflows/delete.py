"""Permanent delete: the collection, then the row; past the lock there is no way back.

One session (the API) is all or nothing: a refusal ends the operation. A batch
(retention's children) has an outcome per session: sessions held by another
operation are left alone, and a collection that can't be dropped fails only its
own session.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        DeleteBatchResult,
        DeleteInput,
        DeleteResult,
        DeleteRowInput,
        DeleteRowsInput,
        DropCollectionsInput,
        DropCollectionsResult,
        HoldInput,
        LockInput,
        UnlockInput,
    )
    from session_service.temporal.workflows.saga import Saga, SagaWorkflow


@registry.DELETE.defn
class DeleteWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: DeleteInput) -> DeleteResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.DELETE.kind)
        try:
            if inp.session_id is None:
                return await self._batch(saga, op, inp.session_ids)
            saga.phase("locking the session")
            saga.push(
                steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[inp.session_id])
            )
            locked = await saga.step(
                steps.LOCK_SESSIONS,
                LockInput(operation_id=op, session_ids=[inp.session_id], allow_deleted=True),
            )
            saga.phase("dropping the collection")
            saga.commit()  # the irreversible step: from here on, only forward
            await saga.final_step(steps.DROP_COLLECTION, locked.sessions[0].collection, long=True)
            saga.phase("deleting the session")
            await saga.final_step(
                steps.DELETE_SESSION_ROW,
                DeleteRowInput(operation_id=op, session_id=inp.session_id),
            )
            saga.done()
            return DeleteResult(message=f"Session {inp.session_id} permanently deleted")
        except BaseException as err:
            await saga.fail(err)

    async def _batch(self, saga: Saga, op: str, session_ids: list[str]) -> DeleteBatchResult:
        saga.phase("holding the sessions")
        saga.push(steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=session_ids))
        hold = await saga.step(
            steps.HOLD_FOR_DELETE, HoldInput(operation_id=op, session_ids=session_ids)
        )
        saga.commit()  # the irreversible step: from here on, only forward
        dropped = DropCollectionsResult()
        if hold.sessions:
            saga.phase(f"dropping {len(hold.sessions)} collections")
            dropped = await saga.final_step(
                steps.DROP_COLLECTIONS, DropCollectionsInput(sessions=hold.sessions), long=True
            )
            saga.phase("deleting the sessions")
            await saga.final_step(
                steps.DELETE_SESSION_ROWS,
                DeleteRowsInput(
                    operation_id=op,
                    delete_ids=dropped.dropped,
                    release_ids=[f["session_id"] for f in dropped.failures],
                ),
            )
        saga.progress.sessions_done = len(dropped.dropped)
        saga.done()
        failures = dropped.failures + [
            {"session_id": sid, "error": f"session {sid} not found"} for sid in hold.missing
        ]
        return DeleteBatchResult(
            message=f"{len(dropped.dropped)} of {len(session_ids)} sessions permanently deleted",
            deleted=len(dropped.dropped),
            held=hold.held_by_others,
            failures=failures,
        )
