"""The Temporal Schedule ``session-retention``, kept in step with the stored policy.

Scheduled runs read the stored policy when they start, so only the cron and
the paused state live in the schedule itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from session_service.domain.models import RetentionPolicy
from session_service.settings import Settings
from session_service.temporal import registry
from session_service.temporal.contracts import RetentionInput

CATCHUP_WINDOW = timedelta(hours=6)


def build(policy: RetentionPolicy, settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            registry.CLEANUP.name,
            RetentionInput(rules=None),
            id="cleanup-scheduled",
            task_queue=settings.temporal_task_queue,
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(registry.OPERATION_KIND, registry.CLEANUP.kind.value),
                    SearchAttributePair(registry.SESSION_IDS, []),
                ]
            ),
            static_summary="scheduled retention sweep",
        ),
        spec=ScheduleSpec(cron_expressions=[policy.schedule]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(
            paused=not policy.enabled,
            note="retention disabled" if not policy.enabled else "",
        ),
    )


async def ensure(client: Client, settings: Settings, policy: RetentionPolicy) -> bool:
    """Create the schedule when missing; True if it was created."""
    try:
        await client.get_schedule_handle(settings.retention_schedule_id).describe()
        return False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        await client.create_schedule(settings.retention_schedule_id, build(policy, settings))
    except Exception as exc:  # another worker created it first
        if "already" not in str(exc).lower():
            raise
        return False
    return True


async def apply(client: Client, settings: Settings, policy: RetentionPolicy) -> None:
    """Make the schedule say what ``policy`` says: its cron, paused unless enabled."""
    if await ensure(client, settings, policy):
        return
    handle = client.get_schedule_handle(settings.retention_schedule_id)
    new = build(policy, settings)

    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=new)

    await handle.update(update)
    # updates don't carry the paused state: set it explicitly
    if policy.enabled:
        await handle.unpause(note="retention enabled")
    else:
        await handle.pause(note="retention disabled")


async def describe(client: Client, settings: Settings) -> dict[str, Any]:
    try:
        desc = await client.get_schedule_handle(settings.retention_schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return {"id": settings.retention_schedule_id, "exists": False}
        raise
    next_runs: list[datetime] = list(desc.info.next_action_times)[:5]
    return {
        "id": settings.retention_schedule_id,
        "exists": True,
        "paused": desc.schedule.state.paused,
        "next_runs": [t.isoformat() for t in next_runs] if not desc.schedule.state.paused else [],
        "recent_runs": [
            getattr(a.action, "workflow_id", None) for a in desc.info.recent_actions[-5:]
        ],
    }
