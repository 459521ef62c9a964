"""The compensation stack and activity calls shared by every workflow.

Rules (DESIGN.md): push the undo before its step; on failure or cancellation
run the undos in reverse, shielded from cancellation and retried until done;
past the irreversible step, only go forward.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast, overload

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import TypeAdapter

    from session_service.domain.naming import collection_name_for
    from session_service.obs.names import OPERATION_DURATION, OPERATIONS_FINISHED
    from session_service.temporal import registry
    from session_service.temporal.contracts import (
        ERROR_STATUS,
        ErrorType,
        IndexInput,
        Progress,
        StepOptions,
    )
    from session_service.temporal.steps import Step

T = TypeVar("T")
In = TypeVar("In")
R = TypeVar("R")

BUSINESS_ERRORS = [e.value for e in ERROR_STATUS]
INTERNAL = "Internal"  # the error type of a failure that is nobody's input
QUICK = timedelta(seconds=60)
# Merges and splits started before cold sessions (API.md G) replay without their reload step.
COLD_SESSIONS = "cold-sessions"


def forward_policy(options: StepOptions) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=options.maximum_attempts,
        non_retryable_error_types=BUSINESS_ERRORS,
    )


# Undos and steps past the point of no return retry until they succeed.
UNTIL_DONE = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=0,
)


def _args(step: Step[Any, Any], arg: Any) -> list[Any]:
    return [] if step.input is None else [arg]


def decoded(value: Any, result_type: type[T] | None) -> T:
    """An activity's result as ``result_type``, decoded in workflow code: a malformed
    result then fails the operation (and is compensated) like any error of the workflow,
    where the SDK's own decoding would fail the workflow task again and again."""
    if result_type is None:
        return cast(T, value)
    return TypeAdapter(result_type).validate_python(value)


class Saga:
    """Calls the steps (the typed activity declarations of ``temporal/steps.py``), keeps
    the undo stack and the operation's progress, and reports how the operation ended."""

    def __init__(self, options: StepOptions, kind: str) -> None:
        self.options = options
        self.kind = kind
        self.progress = Progress()
        self._undo: list[tuple[Step[Any, Any], Any]] = []

    # progress

    def phase(self, phase: str) -> None:
        self.progress.phase = phase
        self.report()

    def report(self) -> None:
        p = self.progress
        detail = p.phase
        if p.points_total:
            detail += f": {p.points_done}/{p.points_total} points"
        workflow.set_current_details(detail)

    # steps

    @overload
    async def step(
        self, step: Step[None, R], *, long: bool = False, settle_on_cancel: bool = False
    ) -> R: ...

    @overload
    async def step(
        self, step: Step[In, R], arg: In, *, long: bool = False, settle_on_cancel: bool = False
    ) -> R: ...

    async def step(
        self,
        step: Step[Any, Any],
        arg: Any = None,
        *,
        long: bool = False,
        settle_on_cancel: bool = False,
    ) -> Any:
        """A forward step with a bounded retry policy and a heartbeat timeout (long steps
        heartbeat their checkpoints; the worker heartbeats for quick ones).

        ``settle_on_cancel``: on a cancel, wait until the activity has finished (or
        stopped) before the undos run, so an undo never races the write it undoes (a
        storage mark that commits after its own undo)."""
        result = await workflow.execute_activity(
            step.name,
            args=_args(step, arg),
            start_to_close_timeout=(
                timedelta(seconds=self.options.start_to_close_seconds) if long else QUICK
            ),
            heartbeat_timeout=self.options.heartbeat_timeout,  # quick ones: AutoHeartbeat
            retry_policy=forward_policy(self.options),
            cancellation_type=(
                workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                if settle_on_cancel
                else workflow.ActivityCancellationType.TRY_CANCEL
            ),
        )
        return decoded(result, step.result)

    @overload
    async def final_step(self, step: Step[None, R], *, long: bool = False) -> R: ...

    @overload
    async def final_step(self, step: Step[In, R], arg: In, *, long: bool = False) -> R: ...

    async def final_step(self, step: Step[Any, Any], arg: Any = None, *, long: bool = False) -> Any:
        """A step past the point of no return: retried until done, deaf to cancellation."""
        handle = workflow.start_activity(
            step.name,
            args=_args(step, arg),
            start_to_close_timeout=(
                timedelta(seconds=self.options.start_to_close_seconds) if long else QUICK
            ),
            heartbeat_timeout=self.options.heartbeat_timeout,  # quick ones: AutoHeartbeat
            retry_policy=UNTIL_DONE,
        )
        while True:
            try:
                return decoded(await asyncio.shield(handle), step.result)
            except asyncio.CancelledError:
                workflow.logger.info("cancel requested past the point of no return; finishing")

    async def index_after(self, session_ids: list[str]) -> None:
        """Start building the search indexes of the sessions this operation filled, as an
        abandoned child: the answer and the locks never wait for it. Histories recorded
        before it existed replay without it."""
        if not session_ids or not workflow.patched("index-after-bulk-write"):
            return
        info = workflow.info()
        try:
            await workflow.start_child_workflow(
                registry.INDEX.name,
                IndexInput(
                    collections=[collection_name_for(s) for s in session_ids],
                    session_ids=session_ids,
                    options=self.options,
                ),
                id=f"index-{info.workflow_id}",
                task_queue=info.task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(registry.OPERATION_KIND, "index")]
                ),
                static_summary=f"build the search index of {len(session_ids)} session(s) "
                f"after {info.workflow_id}",
            )
        except Exception as exc:  # noqa: BLE001 - an index is an optimisation: scans still answer
            workflow.logger.warning("search index build not started: %s", exc)

    # compensation

    def push(self, step: Step[In, Any], arg: In) -> None:
        """The undo of the step about to run: ``step`` with ``arg``, run if the operation
        fails or is cancelled before :meth:`commit`."""
        self._undo.append((step, arg))

    def pop(self) -> tuple[Step[Any, Any], Any]:
        return self._undo.pop()

    def commit(self) -> None:
        """The point of no return: nothing before it will be undone any more."""
        self._undo.clear()

    async def undo_one(self, step: Step[In, Any], arg: In) -> None:
        await self.final_step(step, arg, long=True)

    async def compensate(self, cause: BaseException) -> None:
        self.phase("undoing")
        while self._undo:
            step, arg = self._undo.pop()
            try:
                await self.undo_one(step, arg)
            except GeneratorExit:  # evicted from the worker's cache: replayed elsewhere
                raise
            except BaseException as exc:
                raise ApplicationError(
                    f"compensation {step.name} failed after {type(cause).__name__}: {exc}",
                    type="CompensationFailed",
                    non_retryable=True,
                ) from exc

    # endings

    def done(self) -> None:
        self.phase("done")
        self._outcome("succeeded")

    async def fail(self, err: BaseException) -> NoReturn:
        """Undo, count, and end with the error the operation deserves.

        Continue-as-new is not a failure, and neither is the worker evicting the run
        from its cache (the coroutine is closed with ``GeneratorExit``; it will be
        replayed elsewhere): both pass straight through, with nothing undone."""
        if isinstance(err, workflow.ContinueAsNewError | GeneratorExit):
            raise err
        await self.compensate(err)
        self._outcome("cancelled" if is_cancelled_exception(err) else "failed")
        final = refusal(err)
        if final is err:
            raise err
        raise final from err

    def _outcome(self, status: str) -> None:
        meter = workflow.metric_meter()
        labels = {"kind": self.kind, "status": status}
        meter.create_counter(OPERATIONS_FINISHED, "Operations finished, by kind and status").add(
            1, labels
        )
        meter.create_histogram_timedelta(
            OPERATION_DURATION, "Run time of an operation, by kind and status", "duration"
        ).record(workflow.now() - workflow.info().start_time, labels)


class SagaWorkflow:
    """What every operation's workflow shares: its saga and the ``progress`` query."""

    saga: Saga | None = None

    @workflow.query
    def progress(self) -> Progress:
        return self.saga.progress if self.saga else Progress()

    def begin(self, options: StepOptions, kind: str) -> Saga:
        self.saga = Saga(options, kind)
        return self.saga


def refusal(err: BaseException) -> BaseException:
    """The error the workflow should end with: a business refusal keeps its type.

    Any other exception of workflow code (a bug, a malformed result) fails the operation
    as an internal error: left alone, it would fail the workflow task over and over,
    leaving the operation running forever. Non-determinism alone is left to fail the
    task, so that a fixed deployment can resume the run."""
    cause = err.cause if isinstance(err, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type in BUSINESS_ERRORS:
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    if isinstance(err, FailureError | asyncio.CancelledError | workflow.NondeterminismError):
        return err
    return ApplicationError(
        f"internal error in the workflow: {type(err).__name__}: {err}",
        type=INTERNAL,
        non_retryable=True,
    )


__all__ = ["ErrorType", "Saga", "SagaWorkflow", "refusal"]
