"""Retention: a paged sweep that archives, then permanently deletes, what the policy selects.

Phase one archives (undone if the run fails or is cancelled); phase two deletes
through DeleteWorkflow children, each a batch of a page's sessions, a few at a
time, and can't be undone, so it is deaf to cancellation. The sweep
continues-as-new every few pages, so its history stays bounded whatever the
number of sessions; a dry run lists at most ``ids_listed`` ids of each kind, so
its state does too.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from session_service.domain.retention_rules import RetentionRules
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import (
        ArchiveInput,
        DeleteBatchResult,
        DeleteInput,
        EvaluateInput,
        OffloadInput,
        RetentionInput,
        RetentionResult,
        RetentionTotals,
    )
    from session_service.temporal.workflows.delete import DeleteWorkflow
    from session_service.temporal.workflows.saga import Saga, SagaWorkflow

T = TypeVar("T")

MAX_HISTORY = 8_000
MAX_FAILURES_KEPT = 100
# Runs started before deletes were batched replay with a DeleteWorkflow child per session.
BATCHED_DELETES = "batched-deletes"
# Runs started before cold sessions (API.md section G) replay without offloading.
OFFLOAD_ARCHIVED = "offload-archived"
# Scheduled runs started before idempotency keys expired replay without the sweep.
SWEEP_IDEMPOTENCY_KEYS = "sweep-idempotency-keys"
COUNT_HELD_OFFLOADS = "retention-counts-held-offloads"


def stats(totals: RetentionTotals, dry_run: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "archived_count": totals.archived,
        "deleted_count": totals.deleted,
        "processed_count": totals.processed,
        "skipped_locked_count": totals.skipped_locked,
        "failed_count": totals.failed,
        "offloaded_count": totals.offloaded,
    }
    if totals.failures:
        out["failures"] = totals.failures
    if dry_run:
        out["archived_ids"] = totals.archived_ids
        out["archived_ids_truncated"] = totals.archived > len(totals.archived_ids)
        out["deleted_ids"] = totals.deleted_ids
        out["deleted_ids_truncated"] = totals.deleted > len(totals.deleted_ids)
        out["offloaded_ids"] = totals.offloaded_ids
        out["offloaded_ids_truncated"] = totals.offloaded > len(totals.offloaded_ids)
    return out


def listed(ids: list[str], more: list[str], cap: int) -> list[str]:
    """The first ``cap`` ids: a dry run's lists must fit in one payload whatever the sweep."""
    return ids + more[: max(0, cap - len(ids))]


@registry.CLEANUP.defn
class RetentionWorkflow(SagaWorkflow):
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionResult:
        op = workflow.info().workflow_id
        saga = self.begin(inp.options, registry.CLEANUP.kind)
        saga.progress.sessions_done = inp.totals.processed
        try:
            rules = inp.rules
            if rules is None and inp.phase == "archive" and inp.after_id is None:
                await self._sweep_keys(saga)
            if rules is None:
                loaded = await saga.step(steps.LOAD_POLICY)
                if not loaded.enabled:
                    return RetentionResult(
                        message="retention is disabled; nothing was done",
                        cleanup_stats=stats(inp.totals, inp.dry_run),
                        policy_applied=loaded.rules.model_dump(),
                    )
                rules = loaded.rules
            now = inp.now or workflow.now()
            state = inp.model_copy(update={"rules": rules, "now": now})
            if state.phase == "archive":
                await self._archive_phase(saga, op, state, rules, now)
                if state.dry_run:
                    return self._done(saga, state, rules, "Dry run: nothing was changed")
                state.phase, state.after_id = "delete", None
            saga.commit()  # deleting can't be undone: from here on, only forward
            await self._delete_phase(saga, op, state, rules, now)
            await saga.final_step(steps.FORGET_ARCHIVED, op)
            return self._done(saga, state, rules, "Cleanup completed")
        except BaseException as err:
            await saga.fail(err)

    async def _sweep_keys(self, saga: Saga) -> None:
        """A scheduled run's first step: idempotency keys older than IDEMPOTENCY_TTL go
        (retention disabled or not: they are the service's own records, not sessions)."""
        if workflow.patched(SWEEP_IDEMPOTENCY_KEYS):
            saga.phase("sweeping idempotency keys")
            await saga.step(steps.SWEEP_IDEMPOTENCY_KEYS)

    def _done(
        self, saga: Saga, state: RetentionInput, rules: RetentionRules, message: str
    ) -> RetentionResult:
        saga.done()
        return RetentionResult(
            message=message,
            cleanup_stats=stats(state.totals, state.dry_run),
            policy_applied={**rules.model_dump(), "dry_run": state.dry_run},
        )

    def _maybe_continue(self, state: RetentionInput, pages: int) -> None:
        if pages >= state.pages_per_run or workflow.info().get_current_history_length() > (
            MAX_HISTORY
        ):
            workflow.continue_as_new(state)

    async def _archive_phase(
        self, saga: Saga, op: str, state: RetentionInput, rules: RetentionRules, now: datetime
    ) -> None:
        saga.phase("archiving" if not state.dry_run else "evaluating (dry run)")
        if not state.dry_run:
            saga.push(steps.RESTORE_ARCHIVED, op)
        totals = state.totals
        pages = 0
        while True:
            self._maybe_continue(state, pages)
            page = await saga.step(steps.EVALUATE_PAGE, self._page(op, state, rules, now))
            if page.processed == 0:
                return
            totals.processed += page.processed
            totals.skipped_locked += len(page.locked_archive)
            if state.dry_run:
                totals.skipped_locked += len(page.locked_delete)
                totals.archived += len(page.archive)
                totals.archived_ids = listed(totals.archived_ids, page.archive, state.ids_listed)
                totals.deleted += len(page.delete)
                totals.deleted_ids = listed(totals.deleted_ids, page.delete, state.ids_listed)
                totals.skipped_locked += len(page.locked_offload)
                totals.offloaded += len(page.offload)
                totals.offloaded_ids = listed(totals.offloaded_ids, page.offload, state.ids_listed)
            elif page.archive:
                totals.archived += await saga.step(
                    steps.ARCHIVE_SESSIONS, ArchiveInput(operation_id=op, session_ids=page.archive)
                )
            state.after_id = page.last_id
            saga.progress.sessions_done = totals.processed
            saga.report()
            pages += 1

    async def _delete_phase(
        self, saga: Saga, op: str, state: RetentionInput, rules: RetentionRules, now: datetime
    ) -> None:
        saga.phase("deleting")
        batched = workflow.patched(BATCHED_DELETES)
        totals = state.totals
        pages = 0
        while True:
            self._maybe_continue(state, pages)
            page = await saga.final_step(steps.EVALUATE_PAGE, self._page(op, state, rules, now))
            if page.processed == 0:
                return
            totals.skipped_locked += len(page.locked_delete)
            if batched:
                await self._delete_batches(op, state, page.delete)
            else:
                await self._delete_one_by_one(state, page.delete)
            # held offload candidates count whether or not the page has others to offload
            # (runs recorded before counted them only beside an offload)
            counted = bool(page.locked_offload) and workflow.patched(COUNT_HELD_OFFLOADS)
            if counted:
                totals.skipped_locked += len(page.locked_offload)
            if page.offload and workflow.patched(OFFLOAD_ARCHIVED):
                if not counted:
                    totals.skipped_locked += len(page.locked_offload)
                await self._offload(op, state, page.offload)
            state.after_id = page.last_id
            saga.report()
            pages += 1

    async def _delete_batches(self, op: str, state: RetentionInput, ids: list[str]) -> None:
        """A page's deletes as DeleteWorkflow children of ``delete_batch_size`` sessions,
        at most ``delete_concurrency`` at once; each child's outcomes add to the totals."""
        size = state.delete_batch_size
        batches = [ids[i : i + size] for i in range(0, len(ids), size)]
        totals = state.totals
        for start in range(0, len(batches), state.delete_concurrency):
            group = batches[start : start + state.delete_concurrency]
            for result in await asyncio.gather(*(self._delete_batch(op, state, b) for b in group)):
                totals.deleted += result.deleted
                totals.skipped_locked += len(result.held)
                _record_failures(totals, result.failures)

    async def _delete_batch(
        self, op: str, state: RetentionInput, session_ids: list[str]
    ) -> DeleteBatchResult:
        """One batch as a child that outlives this run; never raises: a child that failed
        as a whole fails each of its sessions."""
        task = asyncio.ensure_future(
            workflow.execute_child_workflow(
                registry.DELETE.name,
                DeleteInput(session_ids=session_ids, options=state.options),
                # unique within the operation: a session is in one page, of one phase
                id=f"{op}-delete-{session_ids[0].replace('-', '')}",
                result_type=DeleteBatchResult,
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        )
        try:
            result: DeleteBatchResult = await _outlive(task)
            return result
        except WorkflowAlreadyStartedError:
            # that batch's child is still running (a reset run): it holds them
            return DeleteBatchResult(message="already being deleted", held=session_ids)
        except ChildWorkflowError as exc:
            error = _child_error(exc)
            return DeleteBatchResult(
                message=error,
                failures=[{"session_id": sid, "error": error} for sid in session_ids],
            )

    async def _delete_one_by_one(self, state: RetentionInput, ids: list[str]) -> None:
        """Before BATCHED_DELETES: a child per session (kept for replaying those runs)."""
        totals = state.totals
        for start in range(0, len(ids), state.delete_concurrency):
            group = ids[start : start + state.delete_concurrency]
            outcomes = await asyncio.gather(*(self._delete(state, sid) for sid in group))
            for sid, outcome in zip(group, outcomes, strict=True):
                if outcome == "deleted":
                    totals.deleted += 1
                elif outcome == "held":
                    totals.skipped_locked += 1
                else:
                    _record_failures(totals, [{"session_id": sid, "error": outcome}])

    async def _delete(self, state: RetentionInput, session_id: str) -> str:
        """One permanent delete as a child that outlives this run; never raises."""
        task = asyncio.ensure_future(
            workflow.execute_child_workflow(
                DeleteWorkflow.run,
                DeleteInput(session_id=session_id, options=state.options),
                id=f"delete-{session_id.replace('-', '')}",
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        )
        try:
            await _outlive(task)
            return "deleted"
        except WorkflowAlreadyStartedError:
            return "held"
        except ChildWorkflowError as exc:
            return _child_error(exc)

    async def _offload(self, op: str, state: RetentionInput, ids: list[str]) -> None:
        """Offload archived sessions as OffloadWorkflow children, ``delete_concurrency`` at
        once; each one's refusal (held meanwhile) or failure is counted, never raised."""
        totals = state.totals
        for start in range(0, len(ids), state.delete_concurrency):
            group = ids[start : start + state.delete_concurrency]
            outcomes = await asyncio.gather(*(self._offload_one(op, state, sid) for sid in group))
            for sid, outcome in zip(group, outcomes, strict=True):
                if outcome == "offloaded":
                    totals.offloaded += 1
                elif outcome == "held":
                    totals.skipped_locked += 1
                else:
                    _record_failures(totals, [{"session_id": sid, "error": outcome}])

    async def _offload_one(self, op: str, state: RetentionInput, session_id: str) -> str:
        task = asyncio.ensure_future(
            workflow.execute_child_workflow(
                registry.OFFLOAD.name,
                OffloadInput(session_id=session_id, options=state.options),
                # an offload's id starts with "offload-": its hold lets stats writes through
                id=f"offload-{session_id.replace('-', '')}-{op}",
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(registry.SESSION_IDS, [session_id]),
                        SearchAttributePair(registry.OPERATION_KIND, registry.OFFLOAD.kind.value),
                    ]
                ),
                memo={
                    "session_ids": [session_id],
                    "started_by": None,
                    "cancel_permission": "admin",
                    "cancel_ids": [session_id],
                },
                static_summary=f"offload archived session {session_id} ({op})",
            )
        )
        try:
            await _outlive(task)
            return "offloaded"
        except WorkflowAlreadyStartedError:
            return "held"
        except ChildWorkflowError as exc:
            cause = getattr(exc, "cause", None)
            if getattr(cause, "type", None) in ("Locked", "Conflict"):
                return "held"
            return _child_error(exc)

    def _page(
        self, op: str, state: RetentionInput, rules: RetentionRules, now: datetime
    ) -> EvaluateInput:
        return EvaluateInput(
            operation_id=op,
            rules=rules,
            now=now,
            after_id=state.after_id,
            page_size=state.page_size,
        )


def _child_error(exc: ChildWorkflowError) -> str:
    cause = getattr(exc, "cause", None)
    return str(getattr(cause, "message", None) or exc.message)


async def _outlive(task: asyncio.Future[T]) -> T:
    """A delete child's result; past the point of no return, a cancel lets it finish."""
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            continue


def _record_failures(totals: RetentionTotals, failures: list[dict[str, str]]) -> None:
    """Count every failure; keep the first ``MAX_FAILURES_KEPT`` to report."""
    totals.failed += len(failures)
    room = MAX_FAILURES_KEPT - len(totals.failures)
    totals.failures += failures[: max(0, room)]
