"""Postgres steps of the retention sweep."""

from __future__ import annotations

from session_service.operation_types import (
    ArchiveInput,
    EvaluateInput,
    EvaluateResult,
    PolicyLoad,
    RetentionRules,
)
from session_service.retention_rules import evaluation
from session_service.stores.repository import SessionRepository
from session_service.temporal import steps
from session_service.temporal.steps import implements


class RetentionSteps:
    def __init__(self, repo: SessionRepository) -> None:
        self.repo = repo

    @implements(steps.LOAD_POLICY)
    async def load_policy(self) -> PolicyLoad:
        policy = await self.repo.get_policy()
        rules = RetentionRules.model_validate(policy.model_dump(exclude={"schedule", "enabled"}))
        return PolicyLoad(rules=rules, enabled=policy.enabled)

    @implements(steps.EVALUATE_PAGE)
    async def evaluate_page(self, inp: EvaluateInput) -> EvaluateResult:
        page = await self.repo.retention_page(inp.operation_id, inp.after_id, inp.page_size)
        return evaluation(page, inp.rules, inp.now)

    @implements(steps.ARCHIVE_SESSIONS)
    async def archive_sessions(self, inp: ArchiveInput) -> int:
        return await self.repo.retention_archive(inp.operation_id, inp.session_ids)

    @implements(steps.RESTORE_ARCHIVED)
    async def restore_archived(self, operation_id: str) -> None:
        await self.repo.retention_restore(operation_id)

    @implements(steps.FORGET_ARCHIVED)
    async def forget_archived(self, operation_id: str) -> None:
        await self.repo.retention_forget(operation_id)
