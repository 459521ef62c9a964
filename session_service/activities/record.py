"""Steps that keep the operations record: the workflow's first and last activities, and
the idempotency-key sweep that the retention schedule's workflow runs."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

from session_service.operation_types import OperationEnd, OperationStart
from session_service.stores.operations_store import OperationStore


class RecordSteps:
    def __init__(self, store: OperationStore, idempotency_ttl: timedelta) -> None:
        self.store = store
        self.idempotency_ttl = idempotency_ttl

    @activity.defn(name="record_operation_start")
    async def record_operation_start(self, inp: OperationStart) -> None:
        await self.store.started(inp)

    @activity.defn(name="record_operation_end")
    async def record_operation_end(self, inp: OperationEnd) -> None:
        await self.store.ended(inp)

    @activity.defn(name="sweep_idempotency_keys")
    async def sweep_idempotency_keys(self) -> int:
        """Delete ``idempotency_keys`` rows older than IDEMPOTENCY_TTL (the worker's)."""
        return await self.store.sweep_idempotency_keys(self.idempotency_ttl)

    def all(self) -> list[object]:
        return [self.record_operation_start, self.record_operation_end, self.sweep_idempotency_keys]
