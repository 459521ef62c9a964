"""A split's copy and its removal of the copied points stop at the next batch when their
worker shuts down (a rolling deploy) and the split goes on from there, as merge's copy
does: no batch lost, none counted twice.

The shutdown is the SDK's own signal (``ActivityEnvironment.worker_shutdown``) at the
activity level; end to end, a step that pauses is injected and the workflow must resume it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from session_service.services.runtime import Runtime
from session_service.temporal import steps
from session_service.temporal.activities.point_steps import PointSteps
from session_service.temporal.contracts import (
    CopyIdsInput,
    CopyIdsResult,
    RemoveInput,
    RemoveResult,
)
from tests.conftest import OpsStack
from tests.test_operations import seeded


class ShutdownAfterFirstUpsert:
    """The store, with the worker told to shut down once the first batch has landed."""

    def __init__(self, vectors: Any, env: ActivityEnvironment) -> None:
        self._vectors = vectors
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vectors, name)

    async def upsert(self, name: str, points: Any) -> int:
        done: int = await self._vectors.upsert(name, points)
        self._env.worker_shutdown()
        return done

    async def delete_ids(self, name: str, ids: Any) -> None:
        await self._vectors.delete_ids(name, ids)
        self._env.worker_shutdown()


@pytest.mark.parametrize("may_pause", [True, False])
async def test_the_copy_pauses_on_shutdown_only_when_the_split_can_resume(
    ops_stack: OpsStack, runtime: Runtime, may_pause: bool
) -> None:
    src = await seeded(ops_stack.make, list(range(25)), tag="drain")
    target = f"drain_{uuid.uuid4().hex}"
    await runtime.vectors.ensure_collection(target, 4, "Dot")
    try:
        env = ActivityEnvironment()
        step = PointSteps(ShutdownAfterFirstUpsert(runtime.vectors, env))
        inp = CopyIdsInput(
            source=src["qdrant_collection_name"],
            target=target,
            ids=[*range(25), 999],  # 999 is not in the source
            batch_size=10,
            may_pause=may_pause,
        )
        got = await env.run(step.copy_points_by_id, inp)
        if not may_pause:  # a split started before the patch: one step, whatever happens
            assert got == CopyIdsResult(found=25, next_batch=None)
            assert await runtime.vectors.count(target) == 25
            return
        assert got == CopyIdsResult(found=10, next_batch=1)
        assert await runtime.vectors.count(target) == 10
        rest = await ActivityEnvironment().run(
            PointSteps(runtime.vectors).copy_points_by_id,
            inp.model_copy(update={"start_batch": got.next_batch, "found_before": got.found}),
        )
        assert rest == CopyIdsResult(found=25, next_batch=None)
        assert await runtime.vectors.count(target) == 25
    finally:
        await runtime.vectors.drop_collection(target)


def pausing_copy_ids(vectors: Any, calls: list[CopyIdsInput]) -> Any:
    """The real step, except that a call allowed to pause stops after its first batch, as
    on a worker's shutdown."""
    real = PointSteps(vectors)

    @steps.COPY_POINTS_BY_ID.fake
    async def copy_points_by_id(inp: CopyIdsInput) -> CopyIdsResult:
        calls.append(inp)
        if not inp.may_pause:
            return await real.copy_points_by_id(inp)
        one = inp.model_copy(update={"ids": list(dict.fromkeys(inp.ids))[: inp.batch_size]})
        first = await real.copy_points_by_id(one.model_copy(update={"start_batch": 0}))
        if inp.start_batch > 0 or len(set(inp.ids)) <= inp.batch_size:
            return await real.copy_points_by_id(inp)  # resumed: go to the end
        return CopyIdsResult(found=inp.found_before + first.found, next_batch=1)

    return copy_points_by_id


async def test_a_paused_split_copy_resumes_where_it_stopped(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c = ops_stack.client  # batches of 10 (the stack's op_batch_size)
    src = await seeded(ops_stack.make, list(range(40)), tag="s")
    calls: list[CopyIdsInput] = []
    async with ops_stack.worker(pausing_copy_ids(runtime.vectors, calls)):
        r = await c.post(
            f"/sessions/{src['id']}/split",
            json={
                "parts": [
                    {"name": "p1", "point_ids": [*range(25), 1000]},
                    {"name": "p2", "point_ids": list(range(25, 40))},
                ]
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["assigned_points"] == 40 and body["skipped_points"] == 1
    counts = [(await c.get(f"/sessions/{sid}/collection")).json() for sid in body["new_sessions"]]
    assert [x["points_count"] for x in counts] == [25, 15], counts
    # each part: a first call that paused, then one that went on from its next batch
    assert [(i.may_pause, i.start_batch, i.found_before) for i in calls] == [
        (True, 0, 0),
        (True, 1, 10),
        (True, 0, 0),
        (True, 1, 10),
    ]


@pytest.mark.parametrize("may_pause", [True, False])
async def test_the_removal_pauses_on_shutdown_only_when_the_split_can_resume(
    ops_stack: OpsStack, runtime: Runtime, may_pause: bool
) -> None:
    src = await seeded(ops_stack.make, list(range(25)), tag="drain")
    source = src["qdrant_collection_name"]
    copy = f"drain_{uuid.uuid4().hex}"
    await runtime.vectors.ensure_collection(copy, 4, "Dot")
    try:
        ids: list[int | str] = list(range(25))
        await ActivityEnvironment().run(
            PointSteps(runtime.vectors).copy_points_by_id,
            CopyIdsInput(source=source, target=copy, ids=ids, batch_size=10),
        )
        env = ActivityEnvironment()
        step = PointSteps(ShutdownAfterFirstUpsert(runtime.vectors, env))
        inp = RemoveInput(
            source=source, ids=ids, copied_to=[copy], batch_size=10, may_pause=may_pause
        )
        got = await env.run(step.remove_points, inp)
        if not may_pause:
            assert got == RemoveResult(removed=25, next_batch=None)
            assert await runtime.vectors.count(source) == 0
            return
        assert got == RemoveResult(removed=10, next_batch=1)
        assert await runtime.vectors.count(source) == 15
        rest = await ActivityEnvironment().run(
            PointSteps(runtime.vectors).remove_points,
            inp.model_copy(update={"start_batch": got.next_batch, "removed_before": got.removed}),
        )
        assert rest == RemoveResult(removed=25, next_batch=None)
        assert await runtime.vectors.count(source) == 0
    finally:
        await runtime.vectors.drop_collection(copy)


def pausing_removal(vectors: Any, calls: list[RemoveInput]) -> Any:
    """The real removal, except that a first call allowed to pause stops after one batch."""
    real = PointSteps(vectors)

    @steps.REMOVE_POINTS.fake
    async def remove_points(inp: RemoveInput) -> RemoveResult:
        calls.append(inp)
        if not inp.may_pause or inp.start_batch > 0:
            return await real.remove_points(inp)
        first = list(dict.fromkeys(inp.ids))[: inp.batch_size]
        one = await real.remove_points(inp.model_copy(update={"ids": first}))
        return RemoveResult(removed=one.removed, next_batch=1)

    return remove_points


async def test_a_paused_removal_resumes_where_it_stopped(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c = ops_stack.client  # batches of 10 (the stack's op_batch_size)
    src = await seeded(ops_stack.make, list(range(40)), tag="s")
    calls: list[RemoveInput] = []
    async with ops_stack.worker(pausing_removal(runtime.vectors, calls)):
        r = await c.post(
            f"/sessions/{src['id']}/split",
            json={
                "parts": [
                    {"name": "p1", "point_ids": list(range(25))},
                    {"name": "p2", "point_ids": list(range(25, 35))},
                ]
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["removed_points"] == 35
    assert (await c.get(f"/sessions/{src['id']}/collection")).json()["points_count"] == 5
    assert [(i.may_pause, i.start_batch, i.removed_before) for i in calls] == [
        (True, 0, 0),
        (True, 1, 10),
    ]


async def test_a_copy_that_pauses_without_advancing_fails_the_split_and_changes_nothing(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """A step whose result never moves on (a bug, a bad deploy) must not keep the split
    looping: the operation fails, compensated, and the source is as it was."""

    @steps.COPY_POINTS_BY_ID.fake
    async def stuck(inp: CopyIdsInput) -> CopyIdsResult:
        return CopyIdsResult(found=0, next_batch=inp.start_batch)

    c = ops_stack.client
    src = await seeded(ops_stack.make, list(range(30)), tag="s")
    collections = await runtime.vectors.collection_names()
    async with ops_stack.worker(stuck):
        r = await c.post(
            f"/sessions/{src['id']}/split",
            json={"parts": [{"name": "p1", "point_ids": list(range(25))}]},
        )
    assert r.status_code == 500, r.text
    assert "went back" in r.json()["detail"]
    assert await runtime.vectors.collection_names() == collections
    assert (await c.get(f"/sessions/{src['id']}/collection")).json()["points_count"] == 30
