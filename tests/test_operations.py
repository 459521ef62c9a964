"""Section B: merge, split and permanent delete as operations, and their guarantees,
each broken on purpose (failing activity, cancel, killed worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from temporalio import activity

from session_service.services.runtime import Runtime
from session_service.temporal import discovery, steps
from session_service.temporal.activities import PointSteps, SessionSteps
from session_service.temporal.contracts import (
    CopyIdsInput,
    CopyIdsResult,
    CopyInput,
    CopyResult,
    LockInput,
    LockResult,
)
from tests.conftest import Factory, OpsStack

pytestmark = pytest.mark.usefixtures("worker")


async def seeded(
    make: Factory,
    ids: list[int],
    *,
    tag: str,
    owner: str | None = None,
    size: int = 4,
    **fields: Any,
) -> dict[str, Any]:
    s = await make.session(
        owner_id=owner, configuration={"vector_size": size, "distance": "Dot"}, **fields
    )
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        pts = [
            {
                "id": i,
                "vector": [float(i % 5), 1.0, 2.0, 3.0][:size] + [0.0] * (size - 4),
                "payload": {"from": tag, "i": i},
            }
            for i in chunk
        ]
        r = await make.client.put(f"/sessions/{s['id']}/points", json={"points": pts})
        assert r.status_code == 200, r.text
    return s


async def point_ids(client: httpx.AsyncClient, session_id: str) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    offset = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if offset is not None:
            params["offset"] = offset
        page = (await client.get(f"/sessions/{session_id}/points", params=params)).json()
        out.update({p["id"]: p["payload"] for p in page["points"]})
        offset = page["next_offset"]
        if offset is None:
            return out


async def snapshot(client: httpx.AsyncClient, session_ids: list[str]) -> list[Any]:
    """What "unchanged" means for a source: status, counters, models, tags, points."""
    out = []
    for sid in session_ids:
        s = (await client.get(f"/sessions/{sid}")).json()
        out.append(
            (
                s["status"],
                s["processing_stats"],
                s["model_usage_history"],
                s["tags"],
                s["metadata"],
                await point_ids(client, sid),
            )
        )
    return out


# merge


async def test_merge_sums_unions_and_later_source_wins(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    owner = make.user()
    a = await seeded(make, list(range(0, 30)), tag="a", owner=owner, tags=["x", "y"])
    b = await seeded(make, list(range(20, 50)), tag="b", owner=owner, tags=["y", "z"])
    c = await seeded(make, list(range(45, 60)), tag="c", owner=owner)
    for s, n, model in ((a, 3, "gpt"), (b, 4, "claude"), (c, 5, "gpt")):
        await client.put(
            f"/sessions/{s['id']}/stats", json={"urls_processed": n, "clusters_generated": 1}
        )
        await client.put(
            f"/sessions/{s['id']}/model-usage", params={"model_type": "llm", "model_name": model}
        )
    r = await client.post(
        "/sessions/merge",
        json={
            "source_session_ids": [a["id"], b["id"], c["id"]],
            "target_name": "Research",
            "metadata": {"why": "test"},
        },
    )
    assert r.status_code == 200, r.text
    op_id = r.headers["Operation-Id"]
    assert op_id.startswith("merge-")
    merged = r.json()
    assert merged["name"] == "Research" and merged["owner_id"] == owner
    assert merged["status"] == "active"
    assert merged["processing_stats"]["urls_processed"] == 12
    assert merged["processing_stats"]["clusters_generated"] == 3
    assert merged["model_usage_history"]["llm_models_used"] == ["gpt", "claude"]
    assert merged["model_usage_history"]["model_switches"] == 3
    assert merged["tags"] == ["x", "y", "z"]
    meta = merged["metadata"]
    assert meta["merged_from"] == [a["id"], b["id"], c["id"]]
    assert meta["merged_point_count"] == 60 and meta["merge_collisions"] == 15
    assert meta["why"] == "test"
    pts = await point_ids(client, merged["id"])
    assert sorted(pts) == list(range(60))
    assert pts[25]["from"] == "b" and pts[47]["from"] == "c" and pts[5]["from"] == "a"
    for s in (a, b, c):
        got = (await client.get(f"/sessions/{s['id']}")).json()
        assert got["status"] == "archived"
        assert (await client.put(f"/sessions/{s['id']}/stats", json={})).status_code == 200
    op = (await client.get(f"/operations/{op_id}")).json()
    assert op["status"] == "succeeded" and op["done"] and op["kind"] == "merge"
    assert op["result"]["id"] == merged["id"]
    assert set(op["session_ids"]) == {a["id"], b["id"], c["id"], merged["id"]}
    assert op["progress"]["points_done"] == op["progress"]["points_total"] == 75
    assert op["links"]["temporal_ui"].endswith(f"/namespaces/default/workflows/{op_id}")


async def test_merge_without_archiving_leaves_sources_untouched(
    client: httpx.AsyncClient, make: Factory
) -> None:
    a = await seeded(make, [1, 2], tag="a")
    b = await seeded(make, [3], tag="b")
    before = await snapshot(client, [a["id"], b["id"]])
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]], "archive_sources": False, "tags": ["t"]},
    )
    assert r.status_code == 200
    assert r.json()["tags"] == ["t"]
    assert await snapshot(client, [a["id"], b["id"]]) == before


async def test_merge_refuses_mismatched_vectors_and_deleted_sources_before_starting(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    owner = make.user()
    a = await seeded(make, [1], tag="a", owner=owner)
    b = await seeded(make, [1], tag="b", owner=owner, size=8)
    collections = await runtime.vectors.collection_names()
    r = await client.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
    assert r.status_code == 409 and "vector" in r.json()["detail"]
    c = await seeded(make, [1], tag="c", owner=owner)
    await client.delete(f"/sessions/{c['id']}")
    r = await client.post("/sessions/merge", json={"source_session_ids": [a["id"], c["id"]]})
    assert r.status_code == 409 and "deleted" in r.json()["detail"]
    r = await client.post("/sessions/merge", json={"source_session_ids": [a["id"], a["id"]]})
    assert r.status_code == 400  # fewer than two sessions, as the first service answered
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], "00000000-0000-4000-8000-000000000000"]},
    )
    assert r.status_code == 404
    listed = (await client.get("/sessions", params={"owner_id": owner})).json()
    assert len(listed) == 3
    assert await runtime.vectors.collection_names() == collections | {c["qdrant_collection_name"]}


def failing_copy(vectors: Any, fail_on_call: int) -> Any:
    real = PointSteps(vectors)
    calls = 0

    @steps.COPY_POINTS.fake
    async def copy_points(inp: CopyInput) -> CopyResult:
        nonlocal calls
        calls += 1
        if calls >= fail_on_call:
            raise RuntimeError("injected: qdrant went away")
        return await real.copy_points(inp)

    return copy_points


async def test_failure_after_n_batches_leaves_nothing_behind(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make = ops_stack.client, ops_stack.make
    owner = make.user()
    a = await seeded(make, list(range(100)), tag="a", owner=owner)
    b = await seeded(make, list(range(100, 200)), tag="b", owner=owner)
    await c.put(f"/sessions/{a['id']}/stats", json={"urls_processed": 7})
    before = await snapshot(c, [a["id"], b["id"]])
    collections = await runtime.vectors.collection_names()
    async with ops_stack.worker(failing_copy(runtime.vectors, fail_on_call=4)):
        r = await c.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
    assert r.status_code == 500, r.text
    op_id = r.headers["Operation-Id"]
    assert "injected" in r.json()["detail"]
    op = (await c.get(f"/operations/{op_id}")).json()
    assert op["status"] == "failed" and op["error"]["message"]
    assert await runtime.vectors.collection_names() == collections
    assert {s["id"] for s in (await c.get("/sessions", params={"owner_id": owner})).json()} == {
        a["id"],
        b["id"],
    }
    assert await snapshot(c, [a["id"], b["id"]]) == before
    assert (await c.put(f"/sessions/{a['id']}/stats", json={})).status_code == 200


def slow_copy(vectors: Any, delay: float) -> Any:
    real = PointSteps(vectors)

    @steps.COPY_POINTS.fake
    async def copy_points(inp: CopyInput) -> CopyResult:
        result = await real.copy_points(inp)
        for _ in range(int(delay / 0.05)):
            activity.heartbeat(None)  # keep cancellation deliverable
            await asyncio.sleep(0.05)
        return result

    return copy_points


async def test_cancel_in_the_middle_undoes_everything(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make = ops_stack.client, ops_stack.make
    owner = make.user()
    a = await seeded(make, list(range(300)), tag="a", owner=owner)
    b = await seeded(make, list(range(300, 600)), tag="b", owner=owner)
    before = await snapshot(c, [a["id"], b["id"]])
    collections = await runtime.vectors.collection_names()
    async with ops_stack.worker(slow_copy(runtime.vectors, 0.3)):
        r = await c.post(
            "/sessions/merge",
            json={"source_session_ids": [a["id"], b["id"]]},
            headers={"Prefer": "respond-async"},
        )
        assert r.status_code == 202
        assert r.headers["Preference-Applied"] == "respond-async"
        op_id = r.json()["id"]
        assert r.headers["Location"] == f"/operations/{op_id}"
        while (await c.get(f"/operations/{op_id}")).json()["progress"]["points_done"] < 100:
            await asyncio.sleep(0.1)
        # held: other changes to a source are refused, naming the operation
        held = await c.put(f"/sessions/{a['id']}/stats", json={"urls_processed": 1})
        assert held.status_code == 409 and op_id in held.json()["detail"]
        assert held.json()["operation_id"] == op_id
        other = await c.post("/sessions/merge", json={"source_session_ids": [b["id"], a["id"]]})
        assert other.status_code == 409 and op_id in other.json()["detail"]
        gone = await c.delete(f"/sessions/{a['id']}", params={"permanent": "true"})
        assert gone.status_code == 409
        assert (await c.post(f"/operations/{op_id}/cancel")).status_code == 202
        op = await ops_stack.wait(op_id, "cancelled", "failed", "succeeded")
    assert op["status"] == "cancelled"
    assert 0 < op["progress"]["points_done"] < 600
    assert await runtime.vectors.collection_names() == collections
    assert len((await c.get("/sessions", params={"owner_id": owner})).json()) == 2
    assert await snapshot(c, [a["id"], b["id"]]) == before
    assert (await c.post(f"/operations/{op_id}/cancel")).status_code == 409


def stalling_copy(vectors: Any, stall_on_call: int, started: asyncio.Event) -> Any:
    """Copies normally, then hangs after one batch of a call (checkpoint sent) as if frozen."""
    real = PointSteps(vectors)
    calls = 0

    @steps.COPY_POINTS.fake
    async def copy_points(inp: CopyInput) -> CopyResult:
        nonlocal calls
        calls += 1
        if calls >= stall_on_call:
            await real.copy_points(inp.model_copy(update={"max_batches": 1}))
            started.set()
            await asyncio.Event().wait()
        return await real.copy_points(inp)

    return copy_points


async def test_killed_worker_resumes_from_checkpoint_exactly(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make = ops_stack.client, ops_stack.make
    a = await seeded(make, list(range(0, 200)), tag="a")
    b = await seeded(make, list(range(150, 400)), tag="b")
    stalled = asyncio.Event()
    doomed = ops_stack.worker(stalling_copy(runtime.vectors, 5, stalled))
    task = asyncio.create_task(doomed.run())
    r = await c.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "respond-async"},
    )
    op_id = r.json()["id"]
    await asyncio.wait_for(stalled.wait(), 30)
    done_before = (await c.get(f"/operations/{op_id}")).json()["progress"]["points_done"]
    assert done_before > 0
    task.cancel()  # the worker dies with an activity in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    async with ops_stack.worker():
        op = await ops_stack.wait(op_id, "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    merged = op["result"]
    pts = await point_ids(c, merged["id"])
    assert sorted(pts) == list(range(400))
    assert merged["metadata"]["merge_collisions"] == 50
    assert merged["metadata"]["merged_point_count"] == 400
    assert op["progress"]["points_done"] == 450
    # the interrupted call resumed after its first batch, not from the call's start
    assert op["progress"]["resumed_from_checkpoint"] == 10


def slow_lock(runtime: Runtime, delay: float, calls: list[int]) -> Any:
    """The quick lock step, slowed down past the heartbeat timeout (a slow database)."""
    real = SessionSteps(runtime.pg, runtime.vectors)

    @steps.LOCK_SESSIONS.fake
    async def lock_sessions(inp: LockInput) -> LockResult:
        calls.append(1)
        await asyncio.sleep(delay)
        return await real.lock_sessions(inp)

    return lock_sessions


async def test_every_step_has_a_heartbeat_timeout_and_quick_ones_are_kept_alive(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """A worker that dies in any step is noticed within the heartbeat timeout (2 s here),
    not at the 60 s start-to-close; a quick step that runs long but lives isn't retried."""
    c, make = ops_stack.client, ops_stack.make
    a = await seeded(make, [1, 2], tag="a")
    b = await seeded(make, [3], tag="b")
    calls: list[int] = []
    async with ops_stack.worker(slow_lock(runtime, 5.0, calls)):
        r = await c.post(
            "/sessions/merge",
            json={"source_session_ids": [a["id"], b["id"]]},
            headers={"Prefer": "respond-async"},
        )
        op = await ops_stack.wait(r.json()["id"], "succeeded", "failed", timeout=60)
    assert op["status"] == "succeeded", op
    assert calls == [1]  # 5 s in a step with a 2 s heartbeat timeout, and no retry
    history = await runtime.temporal.get_workflow_handle(op["id"]).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert len(scheduled) >= 4
    for attrs in scheduled:
        assert attrs.heartbeat_timeout.ToTimedelta().total_seconds() == 2.0, attrs.activity_type


# split


async def test_split_copies_parts_then_removes_points(
    client: httpx.AsyncClient, make: Factory
) -> None:
    owner = make.user()
    src = await seeded(make, list(range(50)), tag="s", owner=owner)
    await client.put(
        f"/sessions/{src['id']}/stats",
        json={"urls_processed": 50, "content_analyzed": 10, "embeddings_created": 50},
    )
    r = await client.post(
        f"/sessions/{src['id']}/split",
        json={
            "parts": [
                {"name": "p1", "point_ids": [1, 2, 3, 999], "tags": ["one"]},
                {"name": "p2", "point_ids": list(range(10, 30)), "metadata": {"k": "v"}},
                {"name": "empty", "point_ids": [1000, 1001]},
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"new_sessions", "assigned_points", "removed_points"}
    assert len(body["new_sessions"]) == 2
    assert body["assigned_points"] == 23 and body["removed_points"] == 23
    assert body["skipped_points"] == 3 and body["skipped_parts"] == 1
    p1, p2 = [(await client.get(f"/sessions/{i}")).json() for i in body["new_sessions"]]
    assert p1["name"] == "p1" and p1["tags"] == ["one"] and p1["owner_id"] == owner
    assert p1["metadata"]["split_from"] == src["id"]
    assert p1["processing_stats"]["urls_processed"] == 3
    assert p1["processing_stats"]["embeddings_created"] == 3
    assert p2["metadata"]["k"] == "v" and p2["processing_stats"]["content_analyzed"] == 20
    assert sorted(await point_ids(client, p2["id"])) == list(range(10, 30))
    left = await point_ids(client, src["id"])
    assert sorted(left) == [0, *range(4, 10), *range(30, 50)]
    after = (await client.get(f"/sessions/{src['id']}")).json()
    assert after["processing_stats"]["urls_processed"] == 27
    assert after["processing_stats"]["content_analyzed"] == 0  # not below zero
    assert after["status"] == "active"
    names = {s["name"] for s in (await client.get("/sessions", params={"owner_id": owner})).json()}
    assert "empty" not in names


async def test_split_keeping_points_and_archiving(client: httpx.AsyncClient, make: Factory) -> None:
    src = await seeded(make, list(range(10)), tag="s")
    r = await client.post(
        f"/sessions/{src['id']}/split",
        json={
            "parts": [{"name": "p", "point_ids": [1, 2]}],
            "remove_points": False,
            "archive_original": True,
        },
    )
    assert r.status_code == 200 and r.json()["removed_points"] == 0
    assert len(await point_ids(client, src["id"])) == 10
    assert (await client.get(f"/sessions/{src['id']}")).json()["status"] == "archived"


def failing_copy_ids(fail_on_call: int, vectors: Any) -> Any:
    real = PointSteps(vectors)
    calls = 0

    @steps.COPY_POINTS_BY_ID.fake
    async def copy_points_by_id(inp: CopyIdsInput) -> CopyIdsResult:
        nonlocal calls
        calls += 1
        if calls >= fail_on_call:
            raise RuntimeError("injected")
        return await real.copy_points_by_id(inp)

    return copy_points_by_id


async def test_split_failing_midway_leaves_source_intact(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make = ops_stack.client, ops_stack.make
    owner = make.user()
    src = await seeded(make, list(range(40)), tag="s", owner=owner)
    before = await snapshot(c, [src["id"]])
    collections = await runtime.vectors.collection_names()
    async with ops_stack.worker(failing_copy_ids(2, runtime.vectors)):
        r = await c.post(
            f"/sessions/{src['id']}/split",
            json={
                "parts": [
                    {"name": "p1", "point_ids": list(range(10))},
                    {"name": "p2", "point_ids": list(range(10, 20))},
                ]
            },
        )
    assert r.status_code == 500
    assert await runtime.vectors.collection_names() == collections
    assert [s["id"] for s in (await c.get("/sessions", params={"owner_id": owner})).json()] == [
        src["id"]
    ]
    assert await snapshot(c, [src["id"]]) == before


# permanent delete


async def test_permanent_delete(client: httpx.AsyncClient, make: Factory, runtime: Runtime) -> None:
    s = await seeded(make, [1, 2, 3], tag="d")
    r = await client.delete(f"/sessions/{s['id']}", params={"permanent": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["permanent"] is True and r.json()["message"]
    assert r.headers["Operation-Id"].startswith("delete-")
    assert (await client.get(f"/sessions/{s['id']}")).status_code == 404
    assert s["qdrant_collection_name"] not in await runtime.vectors.collection_names()
    again = await client.delete(f"/sessions/{s['id']}", params={"permanent": "true"})
    assert again.status_code == 404


# contract details


async def test_idempotency_key_returns_the_same_operation(
    client: httpx.AsyncClient, make: Factory
) -> None:
    a = await seeded(make, [1], tag="a")
    b = await seeded(make, [2], tag="b")
    body = {"source_session_ids": [a["id"], b["id"]], "archive_sources": False}
    key = {"Idempotency-Key": f"merge-{a['id']}"}
    first = await client.post("/sessions/merge", json=body, headers=key)
    again = await client.post("/sessions/merge", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.headers["Operation-Id"] == again.headers["Operation-Id"]
    assert first.json()["id"] == again.json()["id"]
    other = await client.post("/sessions/merge", json={**body, "tags": ["new"]}, headers=key)
    assert other.status_code == 422


async def test_prefer_wait_and_operation_listing(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    a = await seeded(make, [1], tag="a")
    b = await seeded(make, [2], tag="b")
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "wait=0"},
    )
    assert r.status_code == 202
    op_id = r.json()["id"]
    assert r.json()["kind"] == "merge" and r.json()["done"] is False
    while (await client.get(f"/operations/{op_id}")).json()["status"] == "running":
        await asyncio.sleep(0.05)
    listed = (await client.get("/operations", params={"session_id": a["id"]})).json()
    assert [o["id"] for o in listed] == [op_id]
    assert (
        await client.get("/operations", params={"session_id": a["id"], "kind": "split"})
    ).json() == []
    assert [
        o["id"]
        for o in (
            await client.get("/operations", params={"session_id": a["id"], "status": "succeeded"})
        ).json()
    ] == [op_id]
    assert (await client.get("/operations/merge-nope")).status_code == 404
    # visible in Temporal: search attributes and summary
    found = [
        w.id
        async for w in runtime.temporal.list_workflows(
            f"SessionIds = '{a['id']}' AND OperationKind = 'merge'"
        )
    ]
    assert found == [op_id]
    desc = await runtime.temporal.get_workflow_handle(op_id).describe()
    assert (
        await desc.static_summary()
        == "merge 2 sessions into 'Merged: " + f"{a['name']}, {b['name']}'"
    )


async def test_histories_replay_without_nondeterminism(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from session_service.temporal.workflows.record import OperationRecord

    a = await seeded(make, [1, 2], tag="a")
    b = await seeded(make, [3], tag="b")
    merged = await client.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
    split = await client.post(
        f"/sessions/{merged.json()['id']}/split", json={"parts": [{"name": "p", "point_ids": [1]}]}
    )
    deleted = await client.delete(f"/sessions/{a['id']}", params={"permanent": "true"})
    exported = await client.post(f"/sessions/{b['id']}/exports")
    imported = await client.post(
        "/sessions/import", json={"export_id": exported.json()["export_id"]}
    )
    swept = await client.post("/sessions/cleanup", params={"dry_run": "true"}, json={})
    histories = []
    for r in (merged, split, deleted, exported, imported, swept):
        assert r.status_code == 200
        handle = runtime.temporal.get_workflow_handle(r.headers["Operation-Id"])
        histories.append(await handle.fetch_history())
    replayer = Replayer(
        workflows=discovery.workflow_classes(),
        data_converter=pydantic_data_converter,
        interceptors=[OperationRecord()],
    )
    for history in histories:
        await replayer.replay_workflow(history)


async def test_worker_registers_missing_search_attributes(runtime: Runtime) -> None:
    from temporalio.api.operatorservice.v1 import RemoveSearchAttributesRequest

    from session_service.temporal.worker import ensure_search_attributes

    assert await ensure_search_attributes(runtime.temporal, "default") == []
    await runtime.temporal.operator_service.remove_search_attributes(
        RemoveSearchAttributesRequest(namespace="default", search_attributes=["OwnerId"])
    )
    assert await ensure_search_attributes(runtime.temporal, "default") == ["OwnerId"]
    assert await ensure_search_attributes(runtime.temporal, "default") == []


async def test_operations_follow_session_access(client: httpx.AsyncClient, make: Factory) -> None:
    alice, bob = make.user(), make.user()
    as_alice, as_bob = {"X-User-Id": alice}, {"X-User-Id": bob}
    a = await seeded(make, [1], tag="a", owner=alice)
    b = await seeded(make, [2], tag="b", owner=alice)
    r = await client.post(
        "/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]}, headers=as_alice
    )
    assert r.status_code == 200
    assert r.json()["owner_id"] == alice
    op_id, target = r.headers["Operation-Id"], r.json()["id"]
    assert (await client.get(f"/operations/{op_id}", headers=as_alice)).json()["owner_id"] == alice
    assert (await client.get(f"/operations/{op_id}", headers=as_bob)).status_code == 404
    listed = await client.get("/operations", params={"session_id": a["id"]}, headers=as_bob)
    assert listed.json() == []
    # bob may not merge what he can't write
    r = await client.post(
        "/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]}, headers=as_bob
    )
    assert r.status_code == 404
    for sid in (a["id"], b["id"], target):
        assert (await client.get(f"/operations/{op_id}", headers=as_bob)).status_code == 404
        await client.post(f"/sessions/{sid}/share", json={"user_ids": [bob]})
    assert (await client.get(f"/operations/{op_id}", headers=as_bob)).status_code == 200
    r = await client.post(
        f"/sessions/{a['id']}/split",
        headers=as_bob,
        json={"parts": [{"name": "p", "point_ids": [1]}]},
    )
    assert r.status_code == 403
