"""Import: validate the whole input first, then a new session filled in batches."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from session_service.domain.models import (
        MAX_DESCRIPTION,
        MAX_NAME,
        MAX_TAGS,
        Distance,
        SessionConfiguration,
        SessionModel,
    )
    from session_service.domain.naming import collection_name_for
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        DiscardInput,
        FinishImportInput,
        ImportInput,
        ImportPointsInput,
        NewSessionInput,
    )
    from session_service.temporal.workflows.saga import SagaWorkflow


def _text(value: object, limit: int) -> str | None:
    return str(value)[:limit] if value is not None else None


@registry.IMPORT.defn
class ImportWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: ImportInput) -> SessionModel:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.IMPORT.kind)
        try:
            if inp.staged:  # the staging file goes, whatever happens (undone last)
                saga.push(steps.DELETE_ARTIFACT, inp.artifact_key)
            # one pass over the artifact: the header first, every line and the trailer while
            # the points are imported (a bad one fails the import, whose undo drops the
            # session); before this patch, a whole validation pass came first
            one_pass = workflow.patched("single-pass-import")
            if one_pass:
                saga.phase("reading the header")
                header = await saga.step(steps.READ_IMPORT_HEADER, inp.artifact_key)
            else:
                saga.phase("validating")
                header = await saga.step(steps.VALIDATE_IMPORT, inp.artifact_key, long=True)
            saga.progress.points_total = header.points
            original = header.session
            config = dict(original.get("configuration") or {})
            config.update(vector_size=header.vector_size, distance=Distance(header.distance))
            tags = [str(t)[:64] for t in original.get("tags") or [] if t != "imported"]
            metadata = dict(original.get("metadata") or {})
            metadata["imported_from"] = original.get("id")

            saga.phase("creating the session")
            saga.push(
                steps.DISCARD_SESSION, DiscardInput(operation_id=op, session_id=inp.session_id)
            )
            await saga.step(
                steps.CREATE_SESSION,
                NewSessionInput(
                    operation_id=op,
                    session_id=inp.session_id,
                    name=_text(inp.new_name or original.get("name") or "Imported session", MAX_NAME)
                    or "Imported session",
                    description=_text(original.get("description"), MAX_DESCRIPTION),
                    owner_id=original.get("owner_id") if inp.owner_from_artifact else inp.owner_id,
                    configuration=SessionConfiguration.model_validate(config),
                    tags=[*tags[: MAX_TAGS - 1], "imported"],
                    metadata=metadata,
                ),
            )
            saga.phase("importing points")
            done = await saga.step(
                steps.IMPORT_POINTS,
                ImportPointsInput(
                    artifact_key=inp.artifact_key,
                    collection=collection_name_for(inp.session_id),
                    batch_size=inp.options.batch_size,
                    verify=one_pass,
                ),
                long=True,
            )
            saga.progress.points_done = done
            saga.progress.points_total = max(saga.progress.points_total, done)
            saga.phase("finishing")
            result = await saga.step(
                steps.FINISH_IMPORT,
                FinishImportInput(
                    operation_id=op,
                    session_id=inp.session_id,
                    processing_stats=original.get("processing_stats") or {},
                    model_usage=original.get("model_usage_history") or {},
                ),
            )
            saga.commit()
            if inp.staged:
                await saga.final_step(steps.DELETE_ARTIFACT, inp.artifact_key)
            await saga.index_after([inp.session_id])
            saga.done()
            return result
        except BaseException as err:
            await saga.fail(err)
