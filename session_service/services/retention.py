"""The retention policy: stored in Postgres, scheduled in Temporal, run on demand."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from session_service.domain.access import Actor
from session_service.domain.errors import Forbidden
from session_service.domain.models import RetentionPolicy
from session_service.domain.retention_rules import rules_of
from session_service.services.operations import OperationService, Started
from session_service.settings import Settings
from session_service.stores.retention_rows import RetentionRows
from session_service.temporal import schedule
from session_service.temporal.contracts import OperationKind, RetentionInput

DESCRIPTION = (
    "Active or shared sessions inactive for auto_archive_inactive_days are archived; "
    "archived or deleted sessions older than auto_delete_archived_days are deleted permanently; "
    "sessions older than max_age_days are archived; an owner's active sessions beyond the "
    "max_sessions_per_user most recently used are archived. Runs on `schedule` (cron, UTC) "
    "when `enabled`."
)


class RetentionService:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        policies: RetentionRows,
        operations: OperationService,
    ) -> None:
        self.client = client
        self.settings = settings
        self.policies = policies
        self.operations = operations

    async def view(self) -> dict[str, Any]:
        policy = await self.policies.get_policy()
        sched = await schedule.describe(self.client, self.settings)
        sched["cron"] = policy.schedule
        return {
            "retention_policy": policy.model_dump(mode="json"),
            "description": DESCRIPTION,
            "schedule": sched,
        }

    async def replace(self, actor: Actor, policy: RetentionPolicy) -> RetentionPolicy:
        if not actor.trusted:
            raise Forbidden(
                "the retention policy is platform-wide: only trusted services "
                "(no X-User-Id) may change it"
            )
        await self.policies.put_policy(policy)
        await schedule.apply(self.client, self.settings, policy)
        return policy

    async def start_cleanup(
        self, actor: Actor, policy: RetentionPolicy, dry_run: bool, key: str | None
    ) -> Started:
        if not actor.trusted:
            raise Forbidden("cleanup sweeps every session: only trusted services may run it")
        body = {"policy": policy.model_dump(mode="json"), "dry_run": dry_run}
        arg = RetentionInput(rules=rules_of(policy), dry_run=dry_run)
        return await self.operations.start_keyed(
            OperationKind.CLEANUP,
            actor,
            key,
            body,
            arg,
            session_ids=[],
            owner_id=None,
            summary="retention sweep" + (" (dry run)" if dry_run else ""),
        )
