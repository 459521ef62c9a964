"""Offload and reload (API.md section G): a session's points out of the vector engine
into a checksummed artifact, and back.

Offload: hold the session, write the artifact (the export's writer), read it back
(count and SHA-256, against what was written and what the collection holds), mark
the session offloaded, and only then drop the live collection, the irreversible
last step. Until the drop, reads see the points; a failure or cancel before it
undoes in reverse (unmark, delete the artifact, release).

Reload: hold the session, recreate the collection under the same name from the
artifact (the import's one-pass reader checks every line and the trailer), check
the count, mark the session live and release it in one statement, and then delete
the artifact (unless kept by OFFLOAD_KEEP_ARTIFACT_AFTER_RELOAD). A failure before
the mark drops what was recreated: the session stays offloaded, its artifact kept.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from session_service.domain.naming import offload_artifact_key, part_key
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        ColdResult,
        ImportPointsInput,
        LockInput,
        MarkLiveInput,
        MarkOffloadedInput,
        OffloadInput,
        ReloadInput,
        UnlockInput,
        VerifyOffloadInput,
        VerifyReloadInput,
        WriteOffloadInput,
    )
    from session_service.temporal.workflows.saga import SagaWorkflow


# Offloads and reloads recorded before the storage marks settled before their undos
# replay with the old steps.
MARKS_SETTLE = "cold-marks-settle"
HOLD_REFUSES_EXPORTS = "offload-hold-refuses-exports"


def _refusal(message: str, type_: str) -> BaseException:
    return ApplicationError(message, type=type_, non_retryable=True)


@registry.OFFLOAD.defn
class OffloadWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: OffloadInput) -> ColdResult:
        op = workflow.info().workflow_id
        sid = inp.session_id
        saga = self.begin(inp.options, registry.OFFLOAD.kind)
        try:
            saga.phase("holding the session")
            saga.push(steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[sid]))
            held = await saga.step(
                steps.HOLD_FOR_STORAGE,
                LockInput(
                    operation_id=op,
                    session_ids=[sid],
                    allow_deleted=True,
                    # an export being written would be cut short by the drop: refuse it
                    # under the lock (retention's offloads never pass through the API)
                    no_exports=workflow.patched(HOLD_REFUSES_EXPORTS),
                ),
            )
            if held.storage == "offloaded":
                raise _refusal(f"session {sid} is already offloaded", "Conflict")
            key = offload_artifact_key(sid, op)
            saga.phase("writing the artifact")
            saga.push(steps.DELETE_ARTIFACT, key)
            saga.push(steps.DELETE_ARTIFACT, part_key(key))
            written = await saga.step(
                steps.WRITE_OFFLOAD,
                WriteOffloadInput(
                    session_id=sid, artifact_key=key, batch_size=inp.options.export_batch_size
                ),
                long=True,
            )
            saga.progress.points_total = written.points
            saga.phase("verifying the artifact")
            checked = await saga.step(
                steps.VERIFY_OFFLOAD,
                VerifyOffloadInput(collection=held.collection, written=written),
                long=True,
            )
            saga.phase("marking the session offloaded")
            saga.push(steps.MARK_LIVE, MarkLiveInput(operation_id=op, session_id=sid))
            await saga.step(
                steps.MARK_OFFLOADED,
                MarkOffloadedInput(operation_id=op, session_id=sid, artifact=checked),
                # a cancel waits for the mark to land before its undo (unmark) runs
                settle_on_cancel=workflow.patched(MARKS_SETTLE),
            )
            saga.phase("dropping the live collection")
            saga.commit()  # the irreversible step: from here on, only forward
            await saga.final_step(steps.DROP_COLLECTION, held.collection, long=True)
            await saga.final_step(
                steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[sid])
            )
            saga.progress.points_done = checked.points
            saga.done()
            return ColdResult(
                message=f"Session {sid} offloaded",
                session_id=sid,
                storage="offloaded",
                points=checked.points,
                size_bytes=checked.size_bytes,
                sha256=checked.sha256,
            )
        except BaseException as err:
            await saga.fail(err)


@registry.RELOAD.defn
class ReloadWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: ReloadInput) -> ColdResult:
        op = workflow.info().workflow_id
        sid = inp.session_id
        saga = self.begin(inp.options, registry.RELOAD.kind)
        try:
            saga.phase("holding the session")
            saga.push(steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[sid]))
            held = await saga.step(
                steps.HOLD_FOR_STORAGE,
                LockInput(operation_id=op, session_ids=[sid], allow_deleted=True),
            )
            if held.storage != "offloaded" or held.artifact_key is None:
                # already live (a caller that joined late, or a repeat): nothing to do
                await saga.final_step(
                    steps.UNLOCK_SESSIONS, UnlockInput(operation_id=op, session_ids=[sid])
                )
                saga.done()
                return ColdResult(
                    message=f"Session {sid} is live", session_id=sid, storage="live", points=0
                )
            saga.progress.points_total = held.artifact_points
            saga.phase("recreating the collection")
            # safe when nothing was created: an offloaded session has no live collection
            saga.push(steps.DROP_COLLECTION, held.collection)
            await saga.step(steps.CREATE_COLLECTION, held)
            saga.phase("importing points")
            done = await saga.step(
                steps.IMPORT_POINTS,
                ImportPointsInput(
                    artifact_key=held.artifact_key,
                    collection=held.collection,
                    batch_size=inp.options.batch_size,
                    verify=True,
                    expect_sha256=held.artifact_sha256,
                ),
                long=True,
            )
            saga.progress.points_done = done
            saga.phase("verifying the collection")
            await saga.step(
                steps.VERIFY_RELOAD,
                VerifyReloadInput(collection=held.collection, points=held.artifact_points),
            )
            saga.phase("marking the session live")
            mark = MarkLiveInput(operation_id=op, session_id=sid, release=True)
            if workflow.patched(MARKS_SETTLE):
                # Verified: marking live is the point of no return. Undoing after it (the
                # drop) would lose the refilled collection of a session already live, so
                # commit first and let the mark finish whatever a cancel says.
                saga.commit()
                await saga.final_step(steps.MARK_LIVE, mark)
            else:
                await saga.step(steps.MARK_LIVE, mark)
                saga.commit()  # live and released: the artifact is no longer needed
            if not inp.keep_artifact:
                await saga.final_step(steps.DELETE_ARTIFACT, held.artifact_key)
            await saga.index_after([sid])  # a big session gets its search index back
            saga.done()
            return ColdResult(
                message=f"Session {sid} reloaded",
                session_id=sid,
                storage="live",
                points=done,
                sha256=held.artifact_sha256,
            )
        except BaseException as err:
            await saga.fail(err)
