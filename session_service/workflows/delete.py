"""Permanent delete: the collection, then the row; past the lock there is no way back."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.operation_types import (
        DeleteInput,
        DeleteResult,
        DeleteRowInput,
        LockInput,
        LockResult,
        UnlockInput,
    )
    from session_service.workflows.saga import SagaWorkflow


@workflow.defn(name="DeleteWorkflow")
class DeleteWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: DeleteInput) -> DeleteResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, "delete")
        try:
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
