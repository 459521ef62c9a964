"""Postgres steps of the retention sweep."""

from __future__ import annotations

from temporalio import activity

from session_service.operation_types import (
    ArchiveInput,
    EvaluateInput,
    EvaluateResult,
    PolicyLoad,
    RetentionRules,
)
from session_service.retention_rules import evaluation
from session_service.stores.database import Postgres


class RetentionSteps:
    def __init__(self, pg: Postgres) -> None:
        self.retention = pg.retention

    @activity.defn(name="load_policy")
    async def load_policy(self) -> PolicyLoad:
        policy = await self.retention.get_policy()
        rules = RetentionRules.model_validate(policy.model_dump(exclude={"schedule", "enabled"}))
        return PolicyLoad(rules=rules, enabled=policy.enabled)

    @activity.defn(name="evaluate_page")
    async def evaluate_page(self, inp: EvaluateInput) -> EvaluateResult:
        page = await self.retention.page(inp.operation_id, inp.after_id, inp.page_size)
        return evaluation(page, inp.rules, inp.now)

    @activity.defn(name="archive_sessions")
    async def archive_sessions(self, inp: ArchiveInput) -> int:
        return await self.retention.archive(inp.operation_id, inp.session_ids)

    @activity.defn(name="restore_archived")
    async def restore_archived(self, operation_id: str) -> None:
        await self.retention.restore(operation_id)

    @activity.defn(name="forget_archived")
    async def forget_archived(self, operation_id: str) -> None:
        await self.retention.forget(operation_id)

    def all(self) -> list[object]:
        return [
            self.load_policy,
            self.evaluate_page,
            self.archive_sessions,
            self.restore_archived,
            self.forget_archived,
        ]
