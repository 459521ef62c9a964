"""Prototype for ``bench.retention``: the retention sweep with page-batched deletes.

Not the service's code. The same two passes as RetentionWorkflow, calling the
service's own ``evaluate_page``, ``archive_sessions`` and ``forget_archived``
activities on its task queue, but the delete phase runs one ``bench_delete_batch``
activity per page (served by the benchmark process) instead of one DeleteWorkflow
child per session. It exists to measure what that change would buy; it has no
continue-as-new (10,000 sessions make ~40 pages, a few hundred events) and no
compensation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from session_service.operation_types import (
        ArchiveInput,
        EvaluateInput,
        EvaluateResult,
        RetentionRules,
    )

SERVICE_QUEUE = "session-service"
BENCH_QUEUE = "bench-retention-batch"
QUICK = timedelta(seconds=60)
UNTIL_DONE = RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=0)


class BatchInput(BaseModel):
    rules: RetentionRules
    now: datetime | None = None
    page_size: int = 500


class DeleteBatchInput(BaseModel):
    operation_id: str
    session_ids: list[str]


class DeleteBatchResult(BaseModel):
    deleted: int
    held: list[str] = Field(default_factory=list)


class BatchResult(BaseModel):
    processed: int = 0
    archived: int = 0
    deleted: int = 0
    skipped_locked: int = 0
    pages: int = 0


@workflow.defn(name="BenchBatchedRetention")
class BatchedRetention:
    @workflow.run
    async def run(self, inp: BatchInput) -> BatchResult:
        op = workflow.info().workflow_id
        now = inp.now or workflow.now()
        out = BatchResult()
        after: str | None = None
        while True:  # archive pass: as RetentionWorkflow._archive_phase
            page = await self._page(op, inp, now, after)
            if page.processed == 0:
                break
            out.pages += 1
            out.processed += page.processed
            out.skipped_locked += len(page.locked_archive)
            if page.archive:
                out.archived += await workflow.execute_activity(
                    "archive_sessions",
                    ArchiveInput(operation_id=op, session_ids=page.archive),
                    result_type=int,
                    task_queue=SERVICE_QUEUE,
                    start_to_close_timeout=QUICK,
                )
            after = page.last_id
        after = None
        while True:  # delete pass: one activity per page instead of a child per session
            page = await self._page(op, inp, now, after)
            if page.processed == 0:
                break
            out.pages += 1
            out.skipped_locked += len(page.locked_delete)
            if page.delete:
                done = await workflow.execute_activity(
                    "bench_delete_batch",
                    DeleteBatchInput(operation_id=op, session_ids=page.delete),
                    result_type=DeleteBatchResult,
                    task_queue=BENCH_QUEUE,
                    start_to_close_timeout=QUICK,
                    retry_policy=UNTIL_DONE,
                )
                out.deleted += done.deleted
                out.skipped_locked += len(done.held)
            after = page.last_id
        await workflow.execute_activity(
            "forget_archived", op, task_queue=SERVICE_QUEUE, start_to_close_timeout=QUICK
        )
        return out

    async def _page(
        self, op: str, inp: BatchInput, now: datetime, after: str | None
    ) -> EvaluateResult:
        page: EvaluateResult = await workflow.execute_activity(
            "evaluate_page",
            EvaluateInput(
                operation_id=op, rules=inp.rules, now=now, after_id=after, page_size=inp.page_size
            ),
            result_type=EvaluateResult,
            task_queue=SERVICE_QUEUE,
            start_to_close_timeout=QUICK,
        )
        return page
