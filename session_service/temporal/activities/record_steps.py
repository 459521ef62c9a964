"""Steps that keep the operations record: the workflow's first and last activities, and
the idempotency-key sweep that the retention schedule's workflow runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import activity
from temporalio.service import RPCError

from session_service.domain.operation_records import OperationEnd, OperationStart
from session_service.stores.operation_rows import OperationStore
from session_service.temporal import steps
from session_service.temporal.steps import implements


async def _first_start(workflow_id: str, run_id: str) -> datetime | None:
    try:
        handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
        return (await handle.describe()).start_time
    except RPCError:  # the start write goes on: the row then says when it ran first
        return None


class RecordSteps:
    def __init__(self, store: OperationStore, idempotency_ttl: timedelta) -> None:
        self.store = store
        self.idempotency_ttl = idempotency_ttl

    @implements(steps.RECORD_OPERATION_START)
    async def record_operation_start(self, inp: OperationStart) -> None:
        created_at = None
        if await self.store.get(inp.operation_id) is None:
            # not started by the API (a schedule, a workflow, an activity did): the row
            # says it was created when Temporal started its first run
            created_at = await _first_start(inp.operation_id, inp.run_id)
        await self.store.started(inp, created_at)

    @implements(steps.RECORD_OPERATION_END)
    async def record_operation_end(self, inp: OperationEnd) -> None:
        await self.store.ended(inp)

    @implements(steps.SWEEP_IDEMPOTENCY_KEYS)
    async def sweep_idempotency_keys(self) -> int:
        """Delete ``idempotency_keys`` rows older than IDEMPOTENCY_TTL (the worker's)."""
        return await self.store.sweep_idempotency_keys(self.idempotency_ttl)
