"""Graceful shutdown: a worker that stops (a deploy, SIGTERM) lets the copy step in flight
report how far it got, so the operation goes on elsewhere without repeating a batch; and
``session-service dev`` stops the API first, drains the worker, then the stores."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from session_service.api.app import create_app
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import steps
from session_service.temporal.worker import build_worker
from tests.conftest import OpsStack
from tests.test_dev_stack import DevStack, wait_gone
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
            if (
                event.activity_task_scheduled_event_attributes.activity_type.name
                == steps.COPY_POINTS.name
            ):
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


def worker_on(stack: OpsStack, vectors: Any, grace: float, client: Client | None = None) -> Any:
    rt = stack.runtime
    return build_worker(
        client or rt.temporal,
        rt.settings.temporal_task_queue,
        rt.pg,
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


async def test_a_rolling_restart_of_the_workers_during_a_merge_loses_nothing(
    long_steps: OpsStack, runtime: Runtime
) -> None:
    """A deploy replaces the workers one by one (the new one starts, then the old one
    drains), twice, while a merge copies: the merge succeeds with every point once and
    no copy attempt lost."""
    c, make = long_steps.client, long_steps.make
    a = await seeded(make, list(range(0, 300)), tag="a")
    b = await seeded(make, list(range(200, 500)), tag="b")
    slow = SlowCopies(runtime.vectors, delay=0.05)
    old = worker_on(long_steps, slow, grace=1.0)
    old_run = asyncio.create_task(old.run())
    r = await c.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "respond-async"},
    )
    op_id = r.json()["id"]
    for _ in range(2):  # two generations replaced while the merge runs
        await asyncio.wait_for(slow.copying.wait(), 30)
        slow.copying.clear()
        slow.pages = 0
        # a new worker is a new process with its own connection (one process may not
        # run two workers of one task queue on one client)
        own = await Client.connect(
            runtime.temporal.service_client.config.target_host,
            namespace=runtime.temporal.namespace,
        )
        new = worker_on(long_steps, slow, grace=1.0, client=own)
        new_run = asyncio.create_task(new.run())
        await old.shutdown()
        await old_run
        old, old_run = new, new_run
    try:
        op = await long_steps.wait(op_id, "succeeded", "failed", timeout=90)
    finally:
        await old.shutdown()
        await old_run
    assert op["status"] == "succeeded", op
    merged = op["result"]
    assert sorted(await point_ids(c, merged["id"])) == list(range(500))
    assert merged["metadata"]["merged_point_count"] == 500
    assert merged["metadata"]["merge_collisions"] == 100
    steps = await copy_steps(runtime.temporal, op_id)
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


# `session-service dev` as a real process tree, stopped by SIGTERM in the middle of a copy


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a dev stack (``LOG_FORMAT=json``), in order."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevStack]:
    s = DevStack(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.kill_group(signal.SIGKILL)


@pytest.mark.e2e
def test_sigterm_mid_copy_drains_and_the_merge_finishes_after_restart_without_repeats(
    dev: DevStack,
) -> None:
    """SIGTERM to the whole process group (Ctrl-C, a supervisor): the embedded Postgres and
    Temporal don't take it, the parent stops them after the API stopped and the worker
    drained; the copy step in flight reports, and after a restart the merge completes with
    every point once and no copy step run twice."""
    env = {
        "LOG_FORMAT": "json",
        "OP_BATCH_SIZE": "10",
        "OP_BATCHES_PER_CALL": "1000",  # a source of 10,000 points is one long copy step
    }
    dev.start(**env)
    per_source = 30_000  # 3 copy steps a source, back to back
    with httpx.Client(base_url=dev.url, timeout=60) as c:
        ids = []
        for lo in (0, per_source):
            sid = c.post(
                "/sessions", json={"name": f"src-{lo}", "configuration": {"vector_size": 4}}
            ).json()["id"]
            ids.append(sid)
            for start in range(lo, lo + per_source, 1000):
                pts = [
                    {"id": i, "vector": [1.0, 0.5, 0.25, float(i % 7)]}
                    for i in range(start, start + 1000)
                ]
                assert c.put(f"/sessions/{sid}/points", json={"points": pts}).status_code == 200
        r = c.post(
            "/sessions/merge", json={"source_session_ids": ids}, headers={"Prefer": "respond-async"}
        )
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        target = r.json()["session_ids"][-1]

    # SIGTERM while the merge copies. The drain may begin in the few milliseconds between
    # two copy steps (nothing in flight then): stop it again after the restart.
    order = ["api stopped", "worker draining", "copy paused for worker shutdown"]
    order += ["worker stopped", "stores closed", "stopped"]
    copied = 0
    for _ in range(5):  # a loaded machine may stop the API slower than a step lasts
        seen_before = len(events(dev.log))
        with httpx.Client(base_url=dev.url, timeout=60) as c:
            deadline = time.monotonic() + 120
            while True:  # copying goes on
                got = c.get(f"/sessions/{target}/collection")
                now = got.json().get("points_count", 0) if got.status_code == 200 else 0
                if now > copied:
                    break
                assert time.monotonic() < deadline, c.get(f"/operations/{op_id}").json()
                time.sleep(0.02)
        copied = now
        assert copied < 2 * per_source, "the merge ended before SIGTERM: make it bigger"
        procs = dev.tree()
        assert dev.proc is not None
        os.killpg(dev.proc.pid, signal.SIGTERM)
        assert dev.proc.wait(120) == 0, dev.log.read_text()[-3000:]
        assert wait_gone(procs) == []
        said = [e.get("event") for e in events(dev.log)[seen_before:]]
        if "copy paused for worker shutdown" in said:
            assert [e for e in said if e in order] == order, said[-30:]
            break
        assert [e for e in said if e in order] == [e for e in order if "copy" not in e]
        dev.start(**env)
    else:
        raise AssertionError("no SIGTERM found a copy step in flight")

    dev.start(**env)
    with httpx.Client(base_url=dev.url, timeout=60) as c:
        deadline = time.monotonic() + 240
        while (op := c.get(f"/operations/{op_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, op
            time.sleep(0.2)
        assert op["status"] == "succeeded", op
        merged = op["result"]
        assert merged["metadata"]["merged_point_count"] == 2 * per_source
        seen: list[int] = []
        offset = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if offset is not None:
                params["offset"] = offset
            page = c.get(f"/sessions/{merged['id']}/points", params=params).json()
            seen += [p["id"] for p in page["points"]]
            offset = page["next_offset"]
            if offset is None:
                break
        assert sorted(seen) == list(range(2 * per_source))  # each point once
        assert op["progress"]["points_done"] == 2 * per_source
        assert op["progress"]["resumed_from_checkpoint"] == 0

    address = [e["address"] for e in events(dev.log) if e.get("event") == "temporal ready"][-1]

    async def steps() -> list[CopyAttempt]:
        from temporalio.contrib.pydantic import pydantic_data_converter

        client = await Client.connect(address, data_converter=pydantic_data_converter)
        return await copy_steps(client, op_id)

    # the restarted stack's Temporal holds the history of every attempt
    copies = asyncio.run(steps())
    assert len(copies) >= 7, copies  # 6 steps, one of them split by the stop
    assert [s.attempt for s in copies] == [1] * len(copies), copies
    assert sum(s.result["read"] for s in copies if s.result) == 2 * per_source
