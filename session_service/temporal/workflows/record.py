"""The operations record, kept by every operation's workflow through its own activities.

A workflow interceptor wraps the run of each workflow that is an operation: its first
activity upserts the row (started), its last one writes how it ended (succeeded with
its result, failed with its error, cancelled), after the saga's compensation and
shielded from cancellation. Continue-as-new and a worker evicting the run write
nothing (the chain goes on). Runs recorded before this existed replay without it: all
of it is behind the ``operation-record`` patch.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from session_service.domain.operation_records import OperationEnd, OperationStart
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import StepOptions
    from session_service.temporal.steps import Step
    from session_service.temporal.workflows.saga import UNTIL_DONE

OPERATION_RECORD = "operation-record"
_TIMEOUT = timedelta(seconds=60)
T = TypeVar("T")


def error_fields(exc: BaseException) -> tuple[str, str]:
    """(type, message) of how a run failed: the first typed ApplicationError in the cause
    chain (what GET /operations/{id} answered from Temporal), else the outermost message."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ApplicationError) and seen.type:
            return seen.type, seen.message
        if is_cancelled_exception(seen):
            return "Cancelled", "the operation was cancelled"
        seen = seen.__cause__ or getattr(seen, "cause", None)
    return "Internal", exc.message if isinstance(exc, FailureError) else str(exc)


def _session_ids_of(arg: Any) -> list[str]:
    """Sessions an input names, for runs started without a memo (retention's children)."""
    ids: list[str] = []
    for name in ("session_id", "source_id", "target_id"):
        value = getattr(arg, name, None)
        if isinstance(value, str):
            ids.append(value)
    for name in ("session_ids", "source_ids"):
        value = getattr(arg, name, None)
        if isinstance(value, list):
            ids.extend(v for v in value if isinstance(v, str))
    return list(dict.fromkeys(ids))


def _progress() -> dict[str, Any] | None:
    saga = getattr(workflow.instance(), "saga", None)
    progress = getattr(saga, "progress", None)
    return progress.model_dump(mode="json") if isinstance(progress, BaseModel) else None


async def _record(
    step: Step[T, None], arg: T, options: StepOptions, *, shielded: bool = True
) -> None:
    """Run a record step until done, ``shielded`` from cancellation (the end write, like
    the saga's undos); with the operation's heartbeat timeout like every step."""
    handle = workflow.start_activity(
        step.name,
        arg,
        start_to_close_timeout=_TIMEOUT,
        heartbeat_timeout=options.heartbeat_timeout,
        retry_policy=UNTIL_DONE,
    )
    if not shielded:
        await handle
        return
    while True:
        try:
            await asyncio.shield(handle)
            return
        except asyncio.CancelledError:
            workflow.logger.info("cancel requested while recording the operation; finishing")


class _RecordInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        kind = registry.kind_of(info.workflow_type)
        if kind is None or not workflow.patched(OPERATION_RECORD):
            return await super().execute_workflow(input)
        memo = workflow.memo()
        attrs = info.typed_search_attributes
        arg = input.args[0] if input.args else None
        options = getattr(arg, "options", None)
        if not isinstance(options, StepOptions):
            options = StepOptions()
        session_ids = list(
            memo.get("session_ids") or attrs.get(registry.SESSION_IDS) or _session_ids_of(arg)
        )
        run_id = info.first_execution_run_id
        end = OperationEnd(
            operation_id=info.workflow_id,
            kind=kind.value,
            status="succeeded",
            run_id=run_id,
            session_ids=session_ids,
        )
        try:
            # not shielded: a cancel that comes now cancels the operation (recorded below)
            await _record(
                steps.RECORD_OPERATION_START,
                OperationStart(
                    operation_id=info.workflow_id,
                    kind=kind.value,
                    run_id=run_id,
                    session_ids=session_ids,
                    owner_id=attrs.get(registry.OWNER_ID),
                    started_by=memo.get("started_by"),
                    cancel_permission=memo.get("cancel_permission"),
                    cancel_ids=list(memo.get("cancel_ids") or session_ids),
                ),
                options,
                shielded=False,
            )
            result = await super().execute_workflow(input)
        except (workflow.ContinueAsNewError, GeneratorExit, workflow.NondeterminismError):
            raise  # the chain goes on, or the task is retried: nothing ended
        except BaseException as exc:
            if not (isinstance(exc, FailureError) or is_cancelled_exception(exc)):
                raise  # fails the workflow task (retried), not the operation
            end.status = "cancelled" if is_cancelled_exception(exc) else "failed"
            end.error_type, end.error_message = error_fields(exc)
            end.progress = _progress()
            await _record(steps.RECORD_OPERATION_END, end, options)
            raise
        end.progress = _progress()
        end.result = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        await _record(steps.RECORD_OPERATION_END, end, options)
        return result


class OperationRecord(Interceptor):
    """Worker interceptor: every operation's workflow keeps its row in ``operations``."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _RecordInbound


__all__ = ["OPERATION_RECORD", "OperationRecord", "error_fields"]
