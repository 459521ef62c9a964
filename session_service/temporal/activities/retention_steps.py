"""Postgres steps of the retention sweep."""

from __future__ import annotations

from session_service.domain.retention_rules import EvaluateResult, evaluation, rules_of
from session_service.stores.database import Postgres
from session_service.temporal import steps
from session_service.temporal.contracts import ArchiveInput, EvaluateInput, PolicyLoad
from session_service.temporal.steps import implements


class RetentionSteps:
    def __init__(self, pg: Postgres) -> None:
        self.retention = pg.retention

    @implements(steps.LOAD_POLICY)
    async def load_policy(self) -> PolicyLoad:
        policy = await self.retention.get_policy()
        return PolicyLoad(rules=rules_of(policy), enabled=policy.enabled)

    @implements(steps.EVALUATE_PAGE)
    async def evaluate_page(self, inp: EvaluateInput) -> EvaluateResult:
        page = await self.retention.page(inp.operation_id, inp.after_id, inp.page_size)
        return evaluation(page, inp.rules, inp.now)

    @implements(steps.ARCHIVE_SESSIONS)
    async def archive_sessions(self, inp: ArchiveInput) -> int:
        return await self.retention.archive(inp.operation_id, inp.session_ids)

    @implements(steps.RESTORE_ARCHIVED)
    async def restore_archived(self, operation_id: str) -> None:
        await self.retention.restore(operation_id)

    @implements(steps.FORGET_ARCHIVED)
    async def forget_archived(self, operation_id: str) -> None:
        await self.retention.forget(operation_id)
