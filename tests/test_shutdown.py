"""Graceful shutdown: a worker that stops (a deploy, SIGTERM) lets the copy step in flight
report how far it got, so the operation goes on elsewhere without repeating a batch; and
``session-service dev`` stops the API first, drains the worker, then the stores."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from session_service.api.app import create_app
from session_service.runtime import Runtime
from session_service.settings import Settings
from session_service.worker import build_worker
from tests.conftest import OpsStack
from tests.test_operations import point_ids, seeded


@dataclass
class CopyAttempt:
    """One copy step of a workflow as its history tells it: the attempt that finished
    it (1 when no attempt was lost) and its result."""

    attempt: int
    result: dict[str, Any] | None


async def copy_steps(client: Client, operation_id: str) -> list[CopyAttempt]:
    history = await client.get_workflow_handle(operation_id).fetch_history()
    copies: dict[int, CopyAttempt] = {}
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == "copy_points":
                copies[event.event_id] = CopyAttempt(attempt=0, result=None)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in copies:
                copies[started.scheduled_event_id].attempt = started.attempt
        elif event.HasField("activity_task_completed_event_attributes"):
            completed = event.activity_task_completed_event_attributes
            if completed.scheduled_event_id in copies:
                payload = completed.result.payloads[0].data
                copies[completed.scheduled_event_id].result = json.loads(payload)
    return list(copies.values())


class SlowCopies:
    """The real vector store, its copy pages slowed down (a big merge on a busy engine),
    so that a copy step is surely in flight when the worker is told to stop."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.pages = 0
        self.copying = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def copy_page(self, source: str, target: str, **kw: Any) -> Any:
        self.pages += 1
        if self.pages >= 3:
            self.copying.set()
        await asyncio.sleep(self.delay)
        return await self.inner.copy_page(source, target, **kw)


@pytest.fixture
async def long_steps(settings: Settings, runtime: Runtime) -> AsyncIterator[OpsStack]:
    """An app on a task queue of its own whose copy steps are long: up to 1,000 batches
    of 10 points a call, far longer than the drain grace the tests give the worker."""
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"drain-{uuid.uuid4().hex[:8]}",
            "op_batch_size": 10,
            "op_batches_per_call": 1000,
            "op_heartbeat_timeout_seconds": 5.0,
            "op_maximum_attempts": 5,
        }
    )
    rt = Runtime(
        settings=own, pool=runtime.pool, vectors=runtime.vectors, temporal=runtime.temporal
    )
    app = create_app(own, rt)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
        yield OpsStack(rt, c)


def worker_on(stack: OpsStack, vectors: Any, grace: float) -> Any:
    rt = stack.runtime
    return build_worker(
        rt.temporal,
        rt.settings.temporal_task_queue,
        rt.repo,
        vectors,
        rt.artifacts,
        shutdown_grace=timedelta(seconds=grace),
    )


async def test_a_stopping_worker_ends_its_copy_step_at_a_batch_and_nothing_is_copied_twice(
    long_steps: OpsStack, runtime: Runtime
) -> None:
    c, make = long_steps.client, long_steps.make
    a = await seeded(make, list(range(0, 300)), tag="a")
    b = await seeded(make, list(range(200, 500)), tag="b")
    slow = SlowCopies(runtime.vectors, delay=0.1)  # 30 pages a source: ~3 s a copy step
    first = worker_on(long_steps, slow, grace=1.0)
    running = asyncio.create_task(first.run())
    r = await c.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "respond-async"},
    )
    op_id = r.json()["id"]
    await asyncio.wait_for(slow.copying.wait(), 30)
    await first.shutdown()  # what SIGTERM does; the step in flight outlasts the grace
    await running

    steps = await copy_steps(runtime.temporal, op_id)
    assert len(steps) == 1 and steps[0].result is not None, steps
    stopped_at = steps[0].result["read"]
    assert 0 < stopped_at < 300, "the step stopped at a batch boundary, before its end"
    assert stopped_at % 10 == 0

    async with worker_on(long_steps, runtime.vectors, grace=1.0):
        op = await long_steps.wait(op_id, "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    merged = op["result"]
    assert sorted(await point_ids(c, merged["id"])) == list(range(500))
    assert merged["metadata"]["merged_point_count"] == 500

    steps = await copy_steps(runtime.temporal, op_id)
    # no attempt was cancelled and retried: every batch was copied once
    assert [s.attempt for s in steps] == [1] * len(steps), steps
    assert sum(s.result["read"] for s in steps if s.result) == 600
    assert op["progress"]["points_done"] == 600
    assert op["progress"]["resumed_from_checkpoint"] == 0


class HungPage(SlowCopies):
    """A page that hangs past the drain grace (an engine stuck on one batch)."""

    def __init__(self, inner: Any, hang_on: int) -> None:
        super().__init__(inner, delay=0.05)
        self.hang_on = hang_on

    async def copy_page(self, source: str, target: str, **kw: Any) -> Any:
        self.pages += 1
        if self.pages == self.hang_on:
            self.copying.set()
            await asyncio.sleep(3600)
        return await self.inner.copy_page(source, target, **kw)


async def test_a_step_cancelled_when_the_grace_runs_out_resumes_from_its_last_batch(
    long_steps: OpsStack, runtime: Runtime
) -> None:
    c, make = long_steps.client, long_steps.make
    a = await seeded(make, list(range(0, 300)), tag="a")
    b = await seeded(make, list(range(300, 500)), tag="b")
    hung = HungPage(runtime.vectors, hang_on=8)  # 7 batches done, the 8th never ends
    first = worker_on(long_steps, hung, grace=1.0)
    running = asyncio.create_task(first.run())
    r = await c.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "respond-async"},
    )
    op_id = r.json()["id"]
    await asyncio.wait_for(hung.copying.wait(), 30)
    await first.shutdown()
    await running

    async with worker_on(long_steps, runtime.vectors, grace=1.0):
        op = await long_steps.wait(op_id, "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    assert sorted(await point_ids(c, op["result"]["id"])) == list(range(500))
    steps = await copy_steps(runtime.temporal, op_id)
    assert steps[0].attempt == 2, steps
    assert steps[0].result is not None and steps[0].result["resumed_from"] == 70, steps
    assert op["progress"]["points_done"] == 500
