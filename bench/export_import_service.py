"""The service side of ``bench.export_import``: sessions, export and import operations
over HTTP with the dev process's RSS sampled, activity timings from the Temporal
history, and an independent check of the artifact.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.export_import_stack import CpuWindow, DevStack, RssSampler, idle_rss, log, rss

OP_TIMEOUT = 3600.0
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 120.0  # the worker shares the event loop: an answer may wait for a batch


def http(stack: DevStack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT)


def create_session(stack: DevStack, name: str, dim: int) -> dict[str, Any]:
    with http(stack) as client:
        resp = client.post("/sessions", json={"name": name, "configuration": {"vector_size": dim}})
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body


def points_count(stack: DevStack, session_id: str) -> int:
    with http(stack) as client:
        resp = client.get(f"/sessions/{session_id}/stats")
        resp.raise_for_status()
        return int(resp.json()["collection_stats"]["points_count"])


@dataclass
class OpRun:
    """One operation as measured from outside the dev process."""

    operation: dict[str, Any]
    client_seconds: float
    server_seconds: float
    rss_before: int
    rss_peak: int
    rss_max_rise: int
    rss_after: int
    rss_series: list[tuple[float, int]]
    cpu: dict[str, float]
    phases: list[tuple[float, str]]
    poll_latency: dict[str, float]

    @property
    def status(self) -> str:
        return str(self.operation.get("status"))


def _server_seconds(op: dict[str, Any]) -> float:
    began = datetime.fromisoformat(op["created_at"])
    ended = datetime.fromisoformat(op["finished_at"])
    return (ended - began).total_seconds()


def _wait_done(
    client: httpx.Client,
    op_id: str,
    began: float,
    phases: list[tuple[float, str]],
    latencies: list[float],
) -> dict[str, Any]:
    """Poll the operation until it is done; record when each phase was first seen and how
    long each poll took (the API shares its event loop with the worker's activities)."""
    deadline = began + OP_TIMEOUT
    while time.monotonic() < deadline:
        sent = time.monotonic()
        op: dict[str, Any] = client.get(f"/operations/{op_id}").json()
        latencies.append(time.monotonic() - sent)
        phase = str((op.get("progress") or {}).get("phase", op.get("status")))
        if not phases or phases[-1][1] != phase:
            phases.append((round(time.monotonic() - began, 2), phase))
            log(f"  {op_id[:24]}: {phase}")
        if op.get("done"):
            return op
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"operation {op_id} not done after {OP_TIMEOUT}s")


def run_operation(stack: DevStack, path: str, body: dict[str, Any] | None) -> OpRun:
    """POST an operation with ``Prefer: respond-async`` and wait until it is done (succeeded
    or not: the caller looks at ``status``), sampling the dev process's RSS."""
    before = idle_rss(stack.pid)
    phases: list[tuple[float, str]] = []
    latencies: list[float] = []
    sampler = RssSampler(stack.pid, baseline=before)
    with http(stack) as client, sampler, CpuWindow(stack.pid) as cpu:
        began = time.monotonic()
        resp = client.post(path, json=body, headers={"Prefer": "respond-async"})
        if resp.status_code != 202:
            raise RuntimeError(f"POST {path}: {resp.status_code} {resp.text[:500]}")
        op = _wait_done(client, resp.json()["id"], began, phases, latencies)
        client_seconds = time.monotonic() - began
        usage = cpu.read()
    return OpRun(
        operation=op,
        client_seconds=client_seconds,
        server_seconds=_server_seconds(op),
        rss_before=before,
        rss_peak=sampler.peak,
        rss_max_rise=sampler.max_rise,
        rss_after=rss(stack.pid),
        rss_series=sampler.series,
        cpu=usage,
        phases=phases,
        poll_latency=_latency_view(latencies),
    )


def _latency_view(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}
    return {
        "polls": len(ordered),
        "p50_s": round(ordered[len(ordered) // 2], 3),
        "p95_s": round(ordered[int(len(ordered) * 0.95)], 3),
        "max_s": round(ordered[-1], 3),
    }


# the Temporal history: how long each activity took, and how many attempts


async def _activity_timings(address: str, workflow_id: str) -> list[dict[str, Any]]:
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    client = await Client.connect(address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, tuple[float, int]] = {}
    out: list[dict[str, Any]] = []
    for event in history.events:
        at = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, at)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            started[attrs.scheduled_event_id] = (at, attrs.attempt)
        elif event.event_type in _CLOSED:
            outcome, attrs = _CLOSED[event.event_type](event)
            name, sched_at = scheduled[attrs.scheduled_event_id]
            start_at, attempt = started.get(attrs.scheduled_event_id, (sched_at, 1))
            row: dict[str, Any] = {
                "activity": name,
                "outcome": outcome,
                "seconds": round(at - start_at, 3),
                "scheduled_to_close": round(at - sched_at, 3),
                "attempt": attempt,
            }
            if outcome != "completed":
                row["failure"] = attrs.failure.message
            out.append(row)
    return out


def _closed_events() -> dict[Any, Any]:
    from temporalio.api.enums.v1 import EventType

    return {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: lambda e: (
            "completed",
            e.activity_task_completed_event_attributes,
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: lambda e: (
            "failed",
            e.activity_task_failed_event_attributes,
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: lambda e: (
            "timed out",
            e.activity_task_timed_out_event_attributes,
        ),
    }


_CLOSED = _closed_events()


def activity_timings(stack: DevStack, workflow_id: str) -> list[dict[str, Any]]:
    try:
        return asyncio.run(
            asyncio.wait_for(_activity_timings(stack.temporal_address, workflow_id), 60)
        )
    except Exception as exc:  # noqa: BLE001 - timings are a detail; the run stands without them
        log(f"no activity timings for {workflow_id}: {exc!r}")
        return []


# the artifact, checked independently of the service's validator


def check_artifact(path: Path) -> dict[str, Any]:
    """Count point lines, recompute the content SHA-256 and compare both with the trailer."""
    digest = hashlib.sha256()
    points = 0
    trailer: dict[str, Any] = {}
    header: dict[str, Any] = {}
    uncompressed = 0
    with gzip.open(path, "rb") as lines:
        for number, line in enumerate(lines):
            uncompressed += len(line)
            if number == 0:
                header = json.loads(line)
            elif line.startswith(b'{"trailer"'):
                trailer = json.loads(line)["trailer"]
                continue
            else:
                points += 1
            digest.update(line)
    return {
        "file_bytes": path.stat().st_size,
        "uncompressed_bytes": uncompressed,
        "points_lines": points,
        "trailer": trailer,
        "vector_size": header.get("vector_size"),
        "trailer_count_matches": trailer.get("points") == points,
        "sha256_matches": trailer.get("sha256") == digest.hexdigest(),
    }
