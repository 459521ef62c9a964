"""Reading a retention operation back from Temporal: every run of its workflow id,
each run's history (events and bytes), the phases, and where the time went.

A sweep continues-as-new, so one operation is a chain of runs; the API's
``GET /operations/{id}`` describes only the latest run, so the whole operation is
timed here from the first run's start to the last run's close.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecution

# Temporal's default hard limits on one run's history (the server terminates the run).
HISTORY_EVENT_LIMIT = 51_200
HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
BLOB_BYTES_LIMIT = 2 * 1024 * 1024  # one payload (an input, a result)


def _ts(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime()


def _kind(event: HistoryEvent) -> str:
    return str(event.WhichOneof("attributes") or "").removesuffix("_event_attributes")


def _json(payloads: Any) -> Any:
    items = list(payloads.payloads)
    return json.loads(items[0].data) if items else None


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "total_s": round(sum(ordered), 3),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


@dataclass
class RunFacts:
    run_id: str
    events: int
    bytes: int
    server_history_bytes: int
    input_bytes: int
    start: datetime
    end: datetime
    phase_at_start: str
    evaluate_pages: int
    children: int
    ended_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "events": self.events,
            "bytes": self.bytes,
            "server_history_size_bytes": self.server_history_bytes,
            "input_bytes": self.input_bytes,
            "seconds": round((self.end - self.start).total_seconds(), 3),
            "phase_at_start": self.phase_at_start,
            "evaluate_page_calls": self.evaluate_pages,
            "delete_children": self.children,
            "ended_by": self.ended_by,
        }


@dataclass
class Timeline:
    """Everything timed across all runs of one operation."""

    activities: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    activity_queue: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    workflow_tasks: list[float] = field(default_factory=list)
    children: list[float] = field(default_factory=list)
    child_start_latency: list[float] = field(default_factory=list)
    groups: list[tuple[float, float]] = field(default_factory=list)  # (wall, mean child)
    empty_page_times: list[datetime] = field(default_factory=list)
    first_child_at: datetime | None = None
    child_ids: list[str] = field(default_factory=list)
    task_failures: list[str] = field(default_factory=list)


def _walk(events: Sequence[HistoryEvent], tl: Timeline) -> tuple[int, int]:
    """Add one run's events to ``tl``; (evaluate_page calls, children started)."""
    by_id = {e.event_id: e for e in events}
    act_type: dict[int, str] = {}
    wft_scheduled: dict[int, datetime] = {}
    child_init: dict[int, tuple[datetime, int]] = {}  # initiated id -> (time, wft completed id)
    child_done: dict[int, datetime] = {}
    pages = children = 0
    for e in events:
        kind = _kind(e)
        if kind == "activity_task_scheduled":
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            act_type[e.event_id] = name
            pages += name == "evaluate_page"
        elif kind == "activity_task_started":
            sched = e.activity_task_started_event_attributes.scheduled_event_id
            tl.activity_queue[act_type[sched]].append((_ts(e) - _ts(by_id[sched])).total_seconds())
        elif kind == "activity_task_completed":
            attrs = e.activity_task_completed_event_attributes
            name = act_type[attrs.scheduled_event_id]
            tl.activities[name].append(
                (_ts(e) - _ts(by_id[attrs.scheduled_event_id])).total_seconds()
            )
            if name == "evaluate_page":
                result = _json(attrs.result)
                if isinstance(result, dict) and result.get("processed") == 0:
                    tl.empty_page_times.append(_ts(e))
        elif kind == "workflow_task_failed":
            attrs_f = e.workflow_task_failed_event_attributes
            cause = str(attrs_f.cause)
            tl.task_failures.append(f"cause {cause}: {attrs_f.failure.message}"[:500])
        elif kind == "workflow_task_scheduled":
            wft_scheduled[e.event_id] = _ts(e)
        elif kind == "workflow_task_completed":
            sched = e.workflow_task_completed_event_attributes.scheduled_event_id
            if sched in wft_scheduled:
                tl.workflow_tasks.append((_ts(e) - wft_scheduled[sched]).total_seconds())
        elif kind == "start_child_workflow_execution_initiated":
            attrs_c = e.start_child_workflow_execution_initiated_event_attributes
            child_init[e.event_id] = (_ts(e), attrs_c.workflow_task_completed_event_id)
            tl.child_ids.append(attrs_c.workflow_id)
            children += 1
            if tl.first_child_at is None:
                tl.first_child_at = _ts(e)
        elif kind == "child_workflow_execution_started":
            init = e.child_workflow_execution_started_event_attributes.initiated_event_id
            tl.child_start_latency.append((_ts(e) - child_init[init][0]).total_seconds())
        elif kind == "child_workflow_execution_completed":
            init = e.child_workflow_execution_completed_event_attributes.initiated_event_id
            child_done[init] = _ts(e)
            tl.children.append((_ts(e) - child_init[init][0]).total_seconds())
    groups: dict[int, list[int]] = defaultdict(list)
    for init, (_, wft) in child_init.items():
        groups[wft].append(init)
    for members in groups.values():
        done = [child_done[m] for m in members if m in child_done]
        if len(done) != len(members):
            continue
        began = min(child_init[m][0] for m in members)
        durations = [(child_done[m] - child_init[m][0]).total_seconds() for m in members]
        tl.groups.append(((max(done) - began).total_seconds(), statistics.fmean(durations)))
    return pages, children


async def _runs(client: Client, workflow_id: str, timeout: float) -> list[WorkflowExecution]:
    """Every run of ``workflow_id``, oldest first; waits for visibility to list the whole
    chain (runs = continue-as-new events + 1, the last one closed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        runs.sort(key=lambda w: w.start_time)
        closed = all(w.close_time is not None for w in runs)
        statuses = [w.status.name if w.status else "" for w in runs]
        chained = statuses[:-1] == ["CONTINUED_AS_NEW"] * (len(runs) - 1)
        if runs and closed and chained and statuses[-1] != "CONTINUED_AS_NEW":
            return runs
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"visibility never listed the whole chain of {workflow_id}")
        await asyncio.sleep(0.5)


async def analyse(client: Client, workflow_id: str, child_sample: int = 40) -> dict[str, Any]:
    """The runs of one operation, its phases and its time profile."""
    runs = await _runs(client, workflow_id, timeout=60)
    tl = Timeline()
    facts: list[RunFacts] = []
    for w in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=w.run_id).fetch_history()
        events = history.events
        started = events[0].workflow_execution_started_event_attributes
        state = _json(started.input) or {}
        pages, children = _walk(events, tl)
        facts.append(
            RunFacts(
                run_id=w.run_id,
                events=len(events),
                bytes=sum(e.ByteSize() for e in events),
                server_history_bytes=int(w.raw_info.history_size_bytes),
                input_bytes=sum(len(p.data) for p in started.input.payloads),
                start=_ts(events[0]),
                end=_ts(events[-1]),
                phase_at_start=str(state.get("phase", "?")),
                evaluate_pages=pages,
                children=children,
                ended_by=_kind(events[-1]).removeprefix("workflow_execution_"),
            )
        )
    start, end = facts[0].start, facts[-1].end
    total = (end - start).total_seconds()
    archive_end = tl.empty_page_times[0] if tl.empty_page_times else end
    phases: dict[str, float] = {"archive_or_evaluate_s": (archive_end - start).total_seconds()}
    if len(tl.empty_page_times) > 1:
        phases["delete_s"] = (end - archive_end).total_seconds()
        if tl.first_child_at is not None:
            phases["delete_phase_until_first_child_s"] = (
                tl.first_child_at - archive_end
            ).total_seconds()
    longest = max(facts, key=lambda f: f.events)
    biggest = max(facts, key=lambda f: f.bytes)
    group_walls = [g[0] for g in tl.groups]
    out: dict[str, Any] = {
        "workflow_id": workflow_id,
        "runs": len(facts),
        "first_start": start.isoformat() + "Z",
        "last_close": end.isoformat() + "Z",
        "seconds": round(total, 3),
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "longest_run_events": longest.events,
        "largest_run_bytes": biggest.bytes,
        "largest_run_input_bytes": max(f.input_bytes for f in facts),
        "total_events": sum(f.events for f in facts),
        "delete_children": len(tl.child_ids),
        "workflow_task_failures": len(tl.task_failures),
        "last_workflow_task_failure": tl.task_failures[-1] if tl.task_failures else None,
        "per_run": [f.as_dict() for f in facts],
        "activities_schedule_to_close": {k: _stats(v) for k, v in tl.activities.items()},
        "activities_schedule_to_start": {k: _stats(v) for k, v in tl.activity_queue.items()},
        "parent_workflow_tasks": _stats(tl.workflow_tasks),
        "children_initiated_to_completed": _stats(tl.children),
        "children_initiated_to_started": _stats(tl.child_start_latency),
        "delete_groups": {
            **_stats(group_walls),
            "sum_of_group_walls_s": round(sum(group_walls), 3),
            "sum_of_mean_child_s": round(sum(g[1] for g in tl.groups), 3),
        },
    }
    if tl.child_ids:
        out["child_profile"] = await child_profile(client, tl.child_ids, child_sample)
    return out


async def child_profile(client: Client, child_ids: list[str], sample: int) -> dict[str, Any]:
    """Where a DeleteWorkflow child's time goes, over an evenly spaced sample of children."""
    step = max(1, len(child_ids) // sample)
    tl = Timeline()
    totals: list[float] = []
    first_activity: list[float] = []
    events_per_child: list[float] = []
    for cid in child_ids[::step][:sample]:
        events = (await client.get_workflow_handle(cid).fetch_history()).events
        _walk(events, tl)
        totals.append((_ts(events[-1]) - _ts(events[0])).total_seconds())
        events_per_child.append(len(events))
        firsts = [e for e in events if _kind(e) == "activity_task_scheduled"]
        if firsts:
            first_activity.append((_ts(firsts[0]) - _ts(events[0])).total_seconds())
    return {
        "sampled": len(totals),
        "events_per_child": statistics.fmean(events_per_child) if events_per_child else 0,
        "child_run": _stats(totals),
        "start_to_first_activity": _stats(first_activity),
        "workflow_tasks": _stats(tl.workflow_tasks),
        "activities_schedule_to_close": {k: _stats(v) for k, v in tl.activities.items()},
        "activities_schedule_to_start": {k: _stats(v) for k, v in tl.activity_queue.items()},
    }
