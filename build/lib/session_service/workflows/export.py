"""Export: a durable, checksummed artifact of a session and its points."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.operation_types import (
        ExportInput,
        ExportRecordInput,
        ExportResult,
        WriteExportInput,
    )
    from session_service.workflows.saga import SagaWorkflow


@workflow.defn(name="ExportWorkflow")
class ExportWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: ExportInput) -> ExportResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, "export")
        try:
            saga.phase("writing the artifact")
            saga.push("discard_export", inp.export_id)
            await saga.step(
                "create_export_record",
                ExportRecordInput(
                    export_id=inp.export_id,
                    session_id=inp.session_id,
                    owner_id=inp.owner_id,
                    operation_id=op,
                ),
            )
            result = await saga.step(
                "write_export",
                WriteExportInput(
                    export_id=inp.export_id,
                    session_id=inp.session_id,
                    batch_size=inp.options.export_batch_size,
                ),
                ExportResult,
                long=True,
            )
            saga.commit()
            saga.progress.points_done = saga.progress.points_total = result.points
            saga.done()
            return result
        except BaseException as err:
            await saga.fail(err)
