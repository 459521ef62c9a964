"""Permanent delete: the collection, then the row; past the lock there is no way back.

One session (the API) is all or nothing: a refusal ends the operation. A batch
(retention's children) has an outcome per session: sessions held by another
operation are left alone, and a collection that can't be dropped fails only its
own session.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.operation_types import (
        DeleteBatchResult,
        DeleteInput,
        DeleteResult,
        DeleteRowInput,
        DeleteRowsInput,
        DropCollectionsInput,
        DropCollectionsResult,
        HoldInput,
        HoldResult,
        LockInput,
        LockResult,
        UnlockInput,
    )
    from session_service.workflows.saga import Saga, SagaWorkflow


@workflow.defn(name="DeleteWorkflow")
class DeleteWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: DeleteInput) -> DeleteResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, "delete")
        try:
            if inp.session_id is None:
                return await self._batch(saga, op, inp.session_ids)
            saga.phase("locking the session")
            saga.push("unlock_sessions", UnlockInput(operation_id=op, session_ids=[inp.session_id]))
            locked = await saga.step(
                "lock_sessions",
                LockInput(operation_id=op, session_ids=[inp.session_id], allow_deleted=True),
                LockResult,
            )
            saga.phase("dropping the collection")
            saga.commit()  # the irreversible step: from here on, only forward
            await saga.final_step("drop_collection", locked.sessions[0].collection, long=True)
            saga.phase("deleting the session")
            await saga.final_step(
                "delete_session_row", DeleteRowInput(operation_id=op, session_id=inp.session_id)
            )
            saga.done()
            return DeleteResult(message=f"Session {inp.session_id} permanently deleted")
        except BaseException as err:
            await saga.fail(err)

    async def _batch(self, saga: Saga, op: str, session_ids: list[str]) -> DeleteBatchResult:
        saga.phase("holding the sessions")
        saga.push("unlock_sessions", UnlockInput(operation_id=op, session_ids=session_ids))
        hold = await saga.step(
            "hold_for_delete", HoldInput(operation_id=op, session_ids=session_ids), HoldResult
        )
        saga.commit()  # the irreversible step: from here on, only forward
        dropped = DropCollectionsResult()
        if hold.sessions:
            saga.phase(f"dropping {len(hold.sessions)} collections")
            dropped = await saga.final_step(
                "drop_collections",
                DropCollectionsInput(sessions=hold.sessions),
                DropCollectionsResult,
                long=True,
            )
            saga.phase("deleting the sessions")
            await saga.final_step(
                "delete_session_rows",
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
