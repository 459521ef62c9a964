"""Export: a durable, checksummed artifact of a session and its points."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        ExportInput,
        ExportRecordInput,
        ExportResult,
        WriteExportInput,
    )
    from session_service.temporal.workflows.saga import SagaWorkflow


@registry.EXPORT.defn
class ExportWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: ExportInput) -> ExportResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.EXPORT.kind)
        try:
            saga.phase("writing the artifact")
            saga.push(steps.DISCARD_EXPORT, inp.export_id)
            await saga.step(
                steps.CREATE_EXPORT_RECORD,
                ExportRecordInput(
                    export_id=inp.export_id,
                    session_id=inp.session_id,
                    owner_id=inp.owner_id,
                    operation_id=op,
                ),
            )
            result = await saga.step(
                steps.WRITE_EXPORT,
                WriteExportInput(
                    export_id=inp.export_id,
                    session_id=inp.session_id,
                    batch_size=inp.options.export_batch_size,
                ),
                long=True,
            )
            saga.commit()
            saga.progress.points_done = saga.progress.points_total = result.points
            saga.done()
            return result
        except BaseException as err:
            await saga.fail(err)
