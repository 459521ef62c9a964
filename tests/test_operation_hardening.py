"""Issue 12: operations at the contract's limits (100 sources, 100 parts), who sees them,
Idempotency-Keys per caller, what merged and split sessions carry over from their sources,
and steps whose guarantees no other test would notice losing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from session_service.api.app import create_app
from session_service.domain.models import SessionConfiguration
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.stores.vector_store import StoredPoint, collection_name_for
from session_service.temporal import steps
from session_service.temporal.activities import PointSteps, SessionSteps
from session_service.temporal.contracts import (
    CopyIdsInput,
    CopyIdsResult,
    DiscardInput,
    NewSessionInput,
)
from tests.conftest import Factory, OpsStack
from tests.test_operations import failing_copy_ids, point_ids, seeded

pytestmark = pytest.mark.usefixtures("worker")

WAIT = {"Prefer": "wait=300"}


# limits: SessionIds stays within Temporal's 2,048 bytes; session_ids stays complete


async def test_merge_of_100_sources_and_split_into_100_parts(
    client: httpx.AsyncClient, make: Factory
) -> None:
    owner = make.user()
    sources = [await seeded(make, [n], tag=str(n), owner=owner) for n in range(100)]
    ids = [s["id"] for s in sources]
    r = await client.post(
        "/sessions/merge", json={"source_session_ids": ids, "archive_sources": False}, headers=WAIT
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["metadata"]["merged_from"] == ids
    assert merged["metadata"]["merged_point_count"] == 100
    op = (await client.get(f"/operations/{r.headers['Operation-Id']}")).json()
    assert op["session_ids"] == [*ids, merged["id"]]
    for sid in (ids[0], ids[99], merged["id"]):
        listed = await client.get("/operations", params={"session_id": sid, "kind": "merge"})
        assert [o["id"] for o in listed.json()] == [op["id"]]

    parts = [{"name": f"p{n}", "point_ids": [n]} for n in range(100)]
    r = await client.post(f"/sessions/{merged['id']}/split", json={"parts": parts}, headers=WAIT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["new_sessions"]) == 100 and body["assigned_points"] == 100
    op = (await client.get(f"/operations/{r.headers['Operation-Id']}")).json()
    assert op["session_ids"][0] == merged["id"]
    assert set(op["session_ids"][1:]) == set(body["new_sessions"])
    last = body["new_sessions"][-1]
    listed = await client.get("/operations", params={"session_id": last})
    assert [o["id"] for o in listed.json()] == [op["id"]]
    assert await point_ids(client, last) != {}


# who sees an operation (API.md E)


async def test_an_operation_is_visible_only_with_read_on_every_session_it_names(
    client: httpx.AsyncClient, make: Factory
) -> None:
    alice, bob = make.user(), make.user()
    as_bob = {"X-User-Id": bob}
    a = await seeded(make, [1], tag="a", owner=alice)
    b = await seeded(make, [2], tag="b", owner=alice)
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]], "archive_sources": False},
        headers={"X-User-Id": alice},
    )
    assert r.status_code == 200
    op_id, target = r.headers["Operation-Id"], r.json()["id"]

    async def seen() -> tuple[int, list[str]]:
        got = await client.get(f"/operations/{op_id}", headers=as_bob)
        listed = await client.get("/operations", params={"session_id": a["id"]}, headers=as_bob)
        return got.status_code, [o["id"] for o in listed.json()]

    await client.post(f"/sessions/{a['id']}/share", json={"user_ids": [bob]})
    assert await seen() == (404, [])  # one source: not the other, nor the private target
    cancel = await client.post(f"/operations/{op_id}/cancel", headers=as_bob)
    assert cancel.status_code == 404
    await client.post(f"/sessions/{b['id']}/share", json={"user_ids": [bob]})
    assert await seen() == (404, [])
    await client.post(f"/sessions/{target}/share", json={"user_ids": [bob]})
    assert await seen() == (200, [op_id])
    op = (await client.get(f"/operations/{op_id}", headers=as_bob)).json()
    assert op["result"]["id"] == target


async def test_a_finished_delete_stays_visible_to_its_starter_only(
    client: httpx.AsyncClient, make: Factory
) -> None:
    alice = make.user()
    s = await make.session(owner_id=alice)
    await client.post(
        f"/sessions/{s['id']}/share", json={"user_ids": [f"{alice}-a"], "permissions": ["admin"]}
    )
    r = await client.delete(
        f"/sessions/{s['id']}", params={"permanent": "true"}, headers={"X-User-Id": f"{alice}-a"}
    )
    assert r.status_code == 200
    op_id = r.headers["Operation-Id"]
    got = await client.get(f"/operations/{op_id}", headers={"X-User-Id": f"{alice}-a"})
    assert got.status_code == 200
    assert (
        await client.get(f"/operations/{op_id}", headers={"X-User-Id": alice})
    ).status_code == 404


# Idempotency-Keys per caller (API.md E)


@pytest.fixture
async def keyed_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    keyed = settings.model_copy(update={"session_api_keys": "key-number-one,key-number-two"})
    app = create_app(keyed, runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60
    ) as c:
        yield c


async def test_idempotency_keys_never_collide_between_callers(
    keyed_client: httpx.AsyncClient,
) -> None:
    c = keyed_client
    key = f"k-{uuid.uuid4().hex}"
    callers = [
        {"Authorization": "Bearer key-number-one", "X-User-Id": "alice"},
        {"Authorization": "Bearer key-number-one", "X-User-Id": "bob"},
        {"Authorization": "Bearer key-number-one"},
        {"Authorization": "Bearer key-number-two"},
    ]
    created, merges = [], []
    for n, who in enumerate(callers):
        headers = {**who, "Idempotency-Key": key}
        r = await c.post("/sessions", json={"name": f"mine-{n}"}, headers=headers)
        assert r.status_code == 200, r.text
        created.append(r.json()["id"])
        pair = []
        for _ in range(2):
            s = await c.post("/sessions", json={"name": f"src-{n}"}, headers=who)
            pair.append(s.json()["id"])
        body = {"source_session_ids": pair, "archive_sources": False}
        r = await c.post("/sessions/merge", json=body, headers=headers)
        assert r.status_code == 200, r.text
        again = await c.post("/sessions/merge", json=body, headers=headers)
        assert again.headers["Operation-Id"] == r.headers["Operation-Id"]
        other = await c.post("/sessions/merge", json={**body, "tags": ["t"]}, headers=headers)
        assert other.status_code == 422
        merges.append(r.headers["Operation-Id"])
    assert len(set(created)) == len(set(merges)) == len(callers)


# merged and split sessions carry what the first service carried over


async def test_merge_and_split_results_carry_the_sources_fields(
    client: httpx.AsyncClient, make: Factory
) -> None:
    owner = make.user()
    config = {
        "vector_size": 4,
        "distance": "Dot",
        "embedding_model": "e5-small",
        "llm_model": "llama-3",
        "clustering_params": {"k": 3},
        "processing_options": {"lang": "en"},
    }
    a = await seeded(
        make, [1, 2, 3], tag="a", owner=owner, tags=["x", "y"], metadata={"project": "p", "v": "a"}
    )
    await client.put(f"/sessions/{a['id']}", json={"configuration": config})
    for kind, name in (("llm", "llama-3"), ("embedding", "e5-small")):
        await client.put(
            f"/sessions/{a['id']}/model-usage", params={"model_type": kind, "model_name": name}
        )
    b = await seeded(make, [4], tag="b", owner=owner, metadata={"v": "b", "only_b": 1})
    src = (await client.get(f"/sessions/{a['id']}")).json()

    r = await client.post(
        "/sessions/merge",
        json={
            "source_session_ids": [a["id"], b["id"]],
            "archive_sources": False,
            "metadata": {"v": "request", "req": 1},
        },
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["description"] == "Merged session"
    assert merged["configuration"] == src["configuration"]
    assert merged["metadata"] == {
        "project": "p",
        "v": "request",
        "req": 1,
        "merged_from": [a["id"], b["id"]],
        "merged_point_count": 4,
        "merge_collisions": 0,
    }

    r = await client.post(
        f"/sessions/{a['id']}/split",
        json={
            "parts": [
                {"name": "plain", "point_ids": [1]},
                {
                    "name": "own",
                    "point_ids": [2],
                    "description": "mine",
                    "tags": ["own"],
                    "metadata": {"v": "part"},
                },
            ]
        },
    )
    assert r.status_code == 200, r.text
    plain, own = [(await client.get(f"/sessions/{i}")).json() for i in r.json()["new_sessions"]]
    assert plain["description"] == f"Split from {a['id']}"
    assert plain["configuration"] == src["configuration"]
    assert plain["metadata"] == {**src["metadata"], "split_from": a["id"]}
    assert plain["model_usage_history"] == src["model_usage_history"]
    assert plain["tags"] == src["tags"]
    assert own["description"] == "mine"
    assert own["configuration"] == src["configuration"]
    assert own["metadata"] == {**src["metadata"], "v": "part", "split_from": a["id"]}
    assert own["model_usage_history"] == src["model_usage_history"]
    assert own["tags"] == ["own"]


async def test_metadata_a_new_session_could_not_hold_is_refused_up_front(
    client: httpx.AsyncClient, make: Factory
) -> None:
    big = {"big": "x" * 40_000}
    a = await seeded(make, [1], tag="a", metadata=big)
    b = await seeded(make, [2], tag="b")
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]], "metadata": {"more": "y" * 40_000}},
    )
    assert r.status_code == 422 and "metadata" in r.json()["detail"]
    r = await client.post(
        f"/sessions/{a['id']}/split",
        json={"parts": [{"name": "p", "point_ids": [1], "metadata": {"more": "y" * 40_000}}]},
    )
    assert r.status_code == 422 and "parts[0]" in r.json()["detail"]


# compensation: the source of a failed or cancelled split is writable again


async def assert_writable(c: httpx.AsyncClient, session_id: str) -> None:
    assert (
        await c.put(f"/sessions/{session_id}/stats", json={"urls_processed": 1})
    ).status_code == 200
    pts = {"points": [{"id": 12345, "vector": [1.0, 0.0, 0.0, 0.0]}]}
    assert (await c.put(f"/sessions/{session_id}/points", json=pts)).status_code == 200
    assert (await c.put(f"/sessions/{session_id}", json={"name": "again"})).status_code == 200


async def test_a_failed_split_unlocks_its_source(ops_stack: OpsStack, runtime: Runtime) -> None:
    c = ops_stack.client
    src = await seeded(ops_stack.make, list(range(20)), tag="s")
    parts = [
        {"name": "p1", "point_ids": list(range(10))},
        {"name": "p2", "point_ids": list(range(10, 20))},
    ]
    async with ops_stack.worker(failing_copy_ids(2, runtime.vectors)):
        r = await c.post(f"/sessions/{src['id']}/split", json={"parts": parts})
    assert r.status_code == 500
    await assert_writable(c, src["id"])


def stalling_copy_ids(vectors: Any, started: asyncio.Event) -> Any:
    real = PointSteps(vectors)

    @steps.COPY_POINTS_BY_ID.fake
    async def copy_points_by_id(inp: CopyIdsInput) -> CopyIdsResult:
        result = await real.copy_points_by_id(inp)
        started.set()
        while True:  # until cancelled
            activity.heartbeat(None)
            await asyncio.sleep(0.05)
        return result

    return copy_points_by_id


async def test_a_cancelled_split_unlocks_its_source(ops_stack: OpsStack, runtime: Runtime) -> None:
    c = ops_stack.client
    src = await seeded(ops_stack.make, list(range(20)), tag="s")
    started = asyncio.Event()
    async with ops_stack.worker(stalling_copy_ids(runtime.vectors, started)):
        r = await c.post(
            f"/sessions/{src['id']}/split",
            json={"parts": [{"name": "p1", "point_ids": list(range(10))}]},
            headers={"Prefer": "respond-async"},
        )
        op_id = r.json()["id"]
        await asyncio.wait_for(started.wait(), 30)
        held = await c.put(f"/sessions/{src['id']}/stats", json={"urls_processed": 1})
        assert held.status_code == 409
        assert (await c.post(f"/operations/{op_id}/cancel")).status_code == 202
        assert (await ops_stack.wait(op_id, "cancelled", "failed"))["status"] == "cancelled"
    await assert_writable(c, src["id"])


# steps that must be safe to repeat, and counters that must add up


async def test_create_session_activity_run_twice_makes_one_row_and_one_collection(
    runtime: Runtime,
) -> None:
    steps = SessionSteps(runtime.pg, runtime.vectors)
    sid = str(uuid.uuid4())
    inp = NewSessionInput(
        operation_id="merge-twice",
        session_id=sid,
        name="twice",
        configuration=SessionConfiguration(vector_size=4),
    )
    env = ActivityEnvironment()
    await env.run(steps.create_session, inp)
    collection = collection_name_for(sid)
    await runtime.vectors.upsert(collection, [StoredPoint(id=1, vector=[1.0, 0, 0, 0], payload={})])
    await env.run(steps.create_session, inp)  # a retry after the first attempt's effects
    rows = await runtime.pool.fetchval(
        "SELECT count(*) FROM sessions WHERE id = $1", uuid.UUID(sid)
    )
    assert rows == 1
    assert (await runtime.vectors.collection_names()) >= {collection}
    params = await runtime.vectors.collection_params(collection)
    assert params is not None and params.points_count == 1  # not created afresh
    await env.run(steps.discard_session, DiscardInput(operation_id="merge-twice", session_id=sid))


async def test_repository_increments_add_up_across_connections(
    make: Factory, runtime: Runtime
) -> None:
    """The API coalesces concurrent calls in one process; several processes don't share a
    coalescer, so the UPDATE itself must be atomic."""
    s = await make.session()
    await asyncio.gather(
        *(
            runtime.pg.sessions.increment_stats(
                s["id"], {"urls_processed": 1, "embeddings_created": 2}, None
            )
            for _ in range(200)
        )
    )
    stats = (await runtime.pg.sessions.get(s["id"])).processing_stats
    assert (stats.urls_processed, stats.embeddings_created) == (200, 400)
