"""Where a merge's time went, from its Temporal history: activities against the rest.

For every activity of the workflow: when it was scheduled, started and completed.
Summed per activity type, and set against the workflow's run time, this tells how
much of a merge is the copy itself and how much is orchestration (workflow tasks,
activity dispatch, the Postgres steps).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client


@dataclass
class _Activity:
    name: str
    scheduled: datetime
    started: datetime | None = None
    closed: datetime | None = None


def _time(event: Any) -> datetime:
    value: datetime = event.event_time.ToDatetime()
    return value


async def _history(address: str, workflow_id: str) -> list[Any]:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id)
    return [event async for event in handle.fetch_history_events()]


def _activities(events: list[Any]) -> tuple[list[_Activity], datetime, datetime]:
    by_id: dict[int, _Activity] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            by_id[e.event_id] = _Activity(name, _time(e))
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            by_id[e.activity_task_started_event_attributes.scheduled_event_id].started = _time(e)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = e.activity_task_completed_event_attributes
            by_id[attrs.scheduled_event_id].closed = _time(e)
    return list(by_id.values()), _time(events[0]), _time(events[-1])


def summarize(address: str, workflow_id: str) -> dict[str, Any]:
    """Seconds per activity type (dispatch wait and run), and the time outside activities."""
    events = asyncio.run(_history(address, workflow_id))
    activities, began, ended = _activities(events)
    per_type: dict[str, dict[str, float]] = {}
    busy: list[tuple[datetime, datetime]] = []
    for a in activities:
        if a.started is None or a.closed is None:
            continue
        row = per_type.setdefault(a.name, {"calls": 0, "run_s": 0.0, "dispatch_s": 0.0})
        row["calls"] += 1
        row["run_s"] += (a.closed - a.started).total_seconds()
        row["dispatch_s"] += (a.started - a.scheduled).total_seconds()
        busy.append((a.scheduled, a.closed))
    total = (ended - began).total_seconds()
    return {
        "workflow_s": total,
        "history_events": len(events),
        "activities": per_type,
        "outside_activities_s": total - _covered(busy),
    }


def _covered(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by at least one span (activities may run side by side)."""
    seconds, end = 0.0, None
    for start, stop in sorted(spans):
        if end is None or start > end:
            seconds += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            seconds += (stop - end).total_seconds()
            end = stop
    return seconds
