"""Cold sessions (API.md section G): offload and reload round-trip every point, first use
brings a session back, a corrupted artifact fails cleanly, retention offloads archived
sessions, and access is enforced. Guarantees are broken on purpose with fault injection."""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from session_service.api.app import create_app
from session_service.domain.errors import Locked
from session_service.domain.models import ArtifactRef
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.stores.artifacts import DirectoryStore
from session_service.stores.qdrant_server import QdrantServerStore
from session_service.temporal import registry, steps
from session_service.temporal.activities.cold_steps import ColdSteps, part_key
from session_service.temporal.activities.transfer_steps import TransferSteps
from session_service.temporal.contracts import (
    ArtifactCheck,
    ImportPointsInput,
    MarkLiveInput,
    MarkOffloadedInput,
    OffloadInput,
    VerifyOffloadInput,
    WriteExportInput,
    WriteOffloadInput,
)
from session_service.temporal.worker import worker_of
from tests.conftest import Factory, OpsStack
from tests.test_retention import RetentionStack, rstack  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("worker")


async def cold_session(make: Factory, n: int, **fields: Any) -> dict[str, Any]:
    """A session of ``n`` points with integer and UUID ids, vectors and nested payloads."""
    s = await make.session(configuration={"vector_size": 8, "distance": "Euclid"}, **fields)
    pts = []
    for i in range(n):
        pid: int | str = i if i % 3 else f"00000000-0000-4000-8000-{i:012d}"
        pts.append(
            {
                "id": pid,
                "vector": [((i * 7 + k) % 13) / 3.0 - 1.5 for k in range(8)],
                "payload": {"i": i, "tags": [f"t{i % 4}"], "nested": {"x": i / 7}},
            }
        )
    for lo in range(0, n, 1000):
        r = await make.client.put(
            f"/sessions/{s['id']}/points", json={"points": pts[lo : lo + 1000]}
        )
        assert r.status_code == 200, r.text
    return s


async def every_point(client: httpx.AsyncClient, sid: str, **headers: str) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    offset = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "with_vectors": "true"}
        if offset is not None:
            params["offset"] = offset
        r = await client.get(f"/sessions/{sid}/points", params=params, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        out.update({p["id"]: (p["vector"], p["payload"]) for p in page["points"]})
        offset = page["next_offset"]
        if offset is None:
            return out


def make_other(session_id: str) -> str:
    """Another (unknown) session id, for a request that differs from the first."""
    return str(uuid.UUID(int=uuid.UUID(session_id).int ^ 1))


def shard_dir(runtime: Runtime, collection: str) -> Path:
    return runtime.settings.vector_dir / collection


async def offload(client: httpx.AsyncClient, sid: str, **headers: str) -> httpx.Response:
    return await client.post(f"/sessions/{sid}/offload", headers={"Prefer": "wait=60", **headers})


async def test_offload_then_reload_round_trips_every_point(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 1500)
    sid, name = s["id"], s["qdrant_collection_name"]
    before = await every_point(client, sid)
    assert len(before) == 1500
    assert shard_dir(runtime, name).exists()

    r = await offload(client, sid)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["storage"] == "offloaded" and body["points"] == 1500 and body["size_bytes"] > 0
    # in between: no collection, no engine files, the artifact's count without a reload
    assert not await runtime.vectors.exists(name)
    assert not shard_dir(runtime, name).exists()
    got = (await client.get(f"/sessions/{sid}")).json()
    assert got["storage"] == "offloaded"
    info = (await client.get(f"/sessions/{sid}/collection")).json()
    assert info["offloaded"] is True and info["points_count"] == 1500 and not info["exists"]
    assert info["artifact_points"] == 1500
    stats = (await client.get(f"/sessions/{sid}/stats")).json()["collection_stats"]
    assert stats["offloaded"] is True and stats["points_count"] == 1500
    assert not await runtime.vectors.exists(name)  # metadata reads never reload
    record = await runtime.pg.sessions.get(sid)
    assert record.artifact is not None
    artifact = runtime.artifacts.path(record.artifact.key)
    assert artifact.exists() and artifact.stat().st_size == body["size_bytes"]

    r = await client.post(f"/sessions/{sid}/reload", headers={"Prefer": "wait=60"})
    assert r.status_code == 200, r.text
    assert r.json()["storage"] == "live" and r.json()["points"] == 1500
    assert (await client.get(f"/sessions/{sid}")).json()["storage"] == "live"
    after = await every_point(client, sid)
    assert after == before  # ids, vectors and payloads exactly
    assert not artifact.exists()  # deleted after the reload (the default)
    live = (await client.get(f"/sessions/{sid}/collection")).json()
    assert set(live) == {"name", "exists", "points_count", "vector_size", "distance"}  # C's shape


async def test_first_use_reloads_and_writes_follow(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 50)
    sid = s["id"]
    assert (await offload(client, sid)).status_code == 200
    # stats writes never wait and never reload
    r = await client.put(f"/sessions/{sid}/stats", json={"urls_processed": 2})
    assert r.status_code == 200
    assert (await client.get(f"/sessions/{sid}")).json()["storage"] == "offloaded"
    # a write is a first use too: reloaded, then applied
    r = await client.put(
        f"/sessions/{sid}/points",
        json={"points": [{"id": 10_000, "vector": [0.5] * 8, "payload": {"new": True}}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 1}
    assert (await client.get(f"/sessions/{sid}")).json()["storage"] == "live"
    assert len(await every_point(client, sid)) == 51
    q = await client.post(f"/sessions/{sid}/points/query", json={"vector": [0.5] * 8, "limit": 1})
    assert q.status_code == 200 and q.json()["points"][0]["id"] == 10_000


async def test_first_use_answers_202_with_the_reload_when_asked_not_to_wait(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await cold_session(make, 20)
    sid = s["id"]
    assert (await offload(client, sid)).status_code == 200
    r = await client.get(f"/sessions/{sid}/points", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    op = r.json()
    assert op["kind"] == "reload" and op["id"] == r.headers["Operation-Id"]
    assert op["id"].startswith("reload-")
    while (await client.get(f"/operations/{op['id']}")).json()["status"] == "running":
        await asyncio.sleep(0.1)
    assert len(await every_point(client, sid)) == 20


async def test_twenty_concurrent_reads_start_one_reload(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 300)
    sid = s["id"]
    before = await every_point(client, sid)
    assert (await offload(client, sid)).status_code == 200

    async def read() -> dict[Any, Any]:
        return await every_point(client, sid)

    results = await asyncio.gather(*(read() for _ in range(20)))
    assert all(r == before for r in results)
    runs = [
        wf
        async for wf in runtime.temporal.list_workflows(
            f"WorkflowType = 'ReloadWorkflow' AND SessionIds = '{sid}'"
        )
    ]
    assert len(runs) == 1, [w.id for w in runs]


async def test_export_and_merge_of_offloaded_sessions_reload_them(
    client: httpx.AsyncClient, make: Factory
) -> None:
    a = await cold_session(make, 40)
    b = await cold_session(make, 30)
    for s in (a, b):
        assert (await offload(client, s["id"])).status_code == 200
    doc = (await client.get(f"/sessions/{a['id']}/export")).json()
    assert doc["collection_data"]["exported_points"] == 40
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]], "archive_sources": False},
        headers={"Prefer": "wait=60"},
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    # ids 0..39 and 0..29 overlap on 30 ids
    assert merged["metadata"]["merged_point_count"] == 40
    assert (await client.get(f"/sessions/{b['id']}")).json()["storage"] == "live"


async def test_split_of_an_offloaded_session_reloads_it(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await cold_session(make, 30)
    assert (await offload(client, s["id"])).status_code == 200
    r = await client.post(
        f"/sessions/{s['id']}/split",
        json={"parts": [{"name": "p", "point_ids": [1, 2, 4]}]},
        headers={"Prefer": "wait=60"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["assigned_points"] == 3


async def test_offload_refused_while_held_and_twice(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 10)
    sid = s["id"]
    await runtime.pg.locks.lock("merge-someone", [sid])
    try:
        r = await offload(client, sid)
        assert r.status_code == 409 and "merge-someone" in r.json()["detail"]
    finally:
        await runtime.pg.locks.unlock("merge-someone", [sid])
    assert (await offload(client, sid)).status_code == 200
    assert (await offload(client, sid)).status_code == 409
    r = await client.post(f"/sessions/{sid}/reload", headers={"Prefer": "wait=60"})
    assert r.status_code == 200
    assert (await client.post(f"/sessions/{sid}/reload")).status_code == 409  # live


async def test_offload_and_reload_need_admin(client: httpx.AsyncClient, make: Factory) -> None:
    owner, writer = make.user(), make.user()
    s = await make.session(headers={"X-User-Id": owner})
    await client.post(
        f"/sessions/{s['id']}/share",
        json={"user_ids": [writer], "permissions": ["read", "write"]},
        headers={"X-User-Id": owner},
    )
    r = await offload(client, s["id"], **{"X-User-Id": writer})
    assert r.status_code == 403
    r = await offload(client, s["id"], **{"X-User-Id": owner})
    assert r.status_code == 200
    r = await client.post(f"/sessions/{s['id']}/reload", headers={"X-User-Id": writer})
    assert r.status_code == 403
    # ... while a read by the writer brings it back (first use needs read only)
    assert await every_point(client, s["id"], **{"X-User-Id": writer}) == {}
    assert (await client.get(f"/sessions/{s['id']}")).json()["storage"] == "live"
    r = await offload(client, s["id"], **{"X-User-Id": make.user()})
    assert r.status_code == 404


async def test_a_corrupted_artifact_fails_the_reload_cleanly(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 200)
    sid, name = s["id"], s["qdrant_collection_name"]
    assert (await offload(client, sid)).status_code == 200
    record = await runtime.pg.sessions.get(sid)
    assert record.artifact is not None
    path = runtime.artifacts.path(record.artifact.key)
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[57] = lines[57].replace(b'"i":', b'"j":')  # still valid JSON: only the SHA tells
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    corrupted = path.read_bytes()

    r = await client.get(f"/sessions/{sid}/points", headers={"Prefer": "wait=60"})
    assert r.status_code == 422, r.text
    assert "SHA-256" in r.json()["detail"]
    assert path.read_bytes() == corrupted  # kept
    after = await runtime.pg.sessions.get(sid)
    assert after.storage.value == "offloaded" and after.locked_by is None
    assert after.artifact == record.artifact
    assert not await runtime.vectors.exists(name)  # what was recreated is gone again


async def test_another_valid_artifact_in_its_place_fails_the_reload(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    """Same count, a trailer that checks out: only the SHA-256 recorded at the offload
    tells the file is not the session's."""
    a, b = await cold_session(make, 30), await cold_session(make, 30)
    await client.put(
        f"/sessions/{b['id']}/points",
        json={"points": [{"id": 1, "vector": [9.0] * 8, "payload": {"other": True}}]},
    )
    for s in (a, b):
        assert (await offload(client, s["id"])).status_code == 200
    ra, rb = await runtime.pg.sessions.get(a["id"]), await runtime.pg.sessions.get(b["id"])
    assert ra.artifact and rb.artifact and ra.artifact.sha256 != rb.artifact.sha256
    path = runtime.artifacts.path(ra.artifact.key)
    path.write_bytes(runtime.artifacts.path(rb.artifact.key).read_bytes())
    r = await client.get(f"/sessions/{a['id']}/points", headers={"Prefer": "wait=60"})
    assert r.status_code == 422 and "recorded" in r.json()["detail"], r.text
    after = await runtime.pg.sessions.get(a["id"])
    assert after.storage.value == "offloaded" and after.artifact == ra.artifact
    assert not await runtime.vectors.exists(a["qdrant_collection_name"])


async def test_a_failed_offload_leaves_the_session_live(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """Break the read-back: the offload is undone in reverse: no artifact, session live."""
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 60)
    sid, name = s["id"], s["qdrant_collection_name"]

    @steps.VERIFY_OFFLOAD.fake
    async def bad_verify(_: VerifyOffloadInput) -> ArtifactCheck:
        raise ApplicationError("read-back differs", type="ArtifactMismatch", non_retryable=True)

    before = set(os.listdir(runtime.artifacts.root))
    async with ops_stack.worker(bad_verify):
        r = await c.post(f"/sessions/{sid}/offload", headers={"Prefer": "wait=60"})
    assert r.status_code == 500, r.text
    record = await runtime.pg.sessions.get(sid)
    assert record.storage.value == "live" and record.artifact is None and record.locked_by is None
    assert await runtime.vectors.count(name) == 60
    assert set(os.listdir(runtime.artifacts.root)) <= before


async def test_reads_see_the_points_until_the_drop(ops_stack: OpsStack, runtime: Runtime) -> None:
    """An offload held just before its drop: the session is marked, the points readable."""
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 25)
    sid = s["id"]
    gate = asyncio.Event()
    release = asyncio.Event()

    @steps.MARK_OFFLOADED.fake
    async def slow_mark(inp: MarkOffloadedInput) -> None:
        a = inp.artifact
        await runtime.pg.cold.mark_offloaded(
            inp.operation_id,
            inp.session_id,
            ArtifactRef(key=a.key, points=a.points, sha256=a.sha256, size_bytes=a.size_bytes),
        )
        gate.set()
        await release.wait()

    async with ops_stack.worker(slow_mark):
        r = await c.post(f"/sessions/{sid}/offload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await gate.wait()
        # marked, not dropped yet: reads see every point, points writes wait their turn
        # (409), stats writes go through
        assert (await c.get(f"/sessions/{sid}")).json()["storage"] == "offloaded"
        assert len(await every_point(c, sid)) == 25
        q = await c.post(f"/sessions/{sid}/points/query", json={"vector": [0.0] * 8, "limit": 3})
        assert q.status_code == 200 and len(q.json()["points"]) == 3
        w = await c.put(
            f"/sessions/{sid}/points", json={"points": [{"id": 1, "vector": [0.0] * 8}]}
        )
        assert w.status_code == 409 and op in w.json()["detail"]
        assert (
            await c.put(f"/sessions/{sid}/stats", json={"urls_processed": 1})
        ).status_code == 200
        # so do metadata writes (an offload moves points, nothing else)
        renamed = await c.put(f"/sessions/{sid}", json={"name": "renamed", "metadata": {"k": 1}})
        assert renamed.status_code == 200 and renamed.json()["storage"] == "offloaded"
        release.set()
        done = await ops_stack.wait(op, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert not await runtime.vectors.exists(s["qdrant_collection_name"])


# retention: offload_archived_after_days


async def aged(rs: RetentionStack, status: str, days: float, points: int = 0) -> str:
    s = await cold_session(rs.make, points) if points else await rs.make.session()
    await rs.runtime.pool.execute(
        """UPDATE sessions SET status = $2, updated_at = now() - make_interval(secs => $3)
           WHERE id = $1""",
        uuid.UUID(s["id"]),
        status,
        days * 86400,
    )
    return str(s["id"])


async def test_retention_offloads_archived_sessions_and_dry_run_lists_them(
    rstack: RetentionStack,  # noqa: F811 - the fixture imported above
) -> None:
    policy = {
        "auto_archive_inactive_days": 30,
        "auto_delete_archived_days": 90,
        "offload_archived_after_days": 20,
    }
    ids = {
        "archived_40": await aged(rstack, "archived", 40, points=35),
        "archived_5": await aged(rstack, "archived", 5, points=3),
        "active_40": await aged(rstack, "active", 40, points=3),  # archived by this run: kept
        "archived_200": await aged(rstack, "archived", 200),  # deleted, not offloaded
        "held_40": await aged(rstack, "archived", 40),
    }
    await rstack.runtime.pool.execute(
        "UPDATE sessions SET locked_by = 'merge-x' WHERE id = $1", uuid.UUID(ids["held_40"])
    )
    rows = rstack.runtime.pg.sessions
    async with rstack.worker():
        dry = await rstack.client.post("/sessions/cleanup", params={"dry_run": "true"}, json=policy)
        assert dry.status_code == 200, dry.text
        stats = dry.json()["cleanup_stats"]
        assert stats["offloaded_ids"] == [ids["archived_40"]] and stats["offloaded_count"] == 1
        assert (await rows.get(ids["archived_40"])).storage.value == "live"

        r = await rstack.client.post("/sessions/cleanup", json=policy)
        assert r.status_code == 200, r.text
        stats = r.json()["cleanup_stats"]
        assert stats["offloaded_count"] == 1 and stats["deleted_count"] == 1
        assert r.json()["policy_applied"]["offload_archived_after_days"] == 20
    cold = await rows.get(ids["archived_40"])
    assert cold.storage.value == "offloaded" and cold.artifact is not None
    assert cold.artifact.points == 35 and cold.locked_by is None
    assert not await rstack.runtime.vectors.exists(cold.qdrant_collection_name)
    for name in ("archived_5", "active_40", "held_40"):
        assert (await rows.get(ids[name])).storage.value == "live", name
    # the operator's listing shows it, with the artifact's size
    bad = await rstack.client.get("/sessions/offloaded", params={"after": "nope"})
    assert bad.status_code == 422
    listed = (await rstack.client.get("/sessions/offloaded")).json()
    [row] = [x for x in listed if x["session_id"] == ids["archived_40"]]
    assert row["points"] == 35 and row["size_bytes"] == cold.artifact.size_bytes > 0
    # a permanent delete takes the artifact with the row
    path = rstack.runtime.artifacts.path(cold.artifact.key)
    assert path.exists()
    async with rstack.worker():
        r = await rstack.client.delete(
            f"/sessions/{ids['archived_40']}", params={"permanent": "true"}
        )
    assert r.status_code == 200, r.text
    assert not path.exists()


@pytest.mark.parametrize("value", [0, -3, "x", 1.5, True])
async def test_offload_archived_after_days_must_be_a_positive_int_or_null(
    client: httpx.AsyncClient, value: Any
) -> None:
    r = await client.put("/sessions/retention-policy", json={"offload_archived_after_days": value})
    assert r.status_code == 422, r.text
    r = await client.post(
        "/sessions/cleanup",
        params={"dry_run": "true"},
        json={"offload_archived_after_days": value},
    )
    assert r.status_code == 422, r.text


async def test_offload_archived_after_days_is_stored_and_read_back(
    client: httpx.AsyncClient,
) -> None:
    r = await client.put("/sessions/retention-policy", json={"offload_archived_after_days": 7})
    assert r.status_code == 200 and r.json()["new_policy"]["offload_archived_after_days"] == 7
    got = (await client.get("/sessions/retention-policy")).json()["retention_policy"]
    assert got["offload_archived_after_days"] == 7
    r = await client.put("/sessions/retention-policy", json={})  # back to the defaults
    assert "offload_archived_after_days" not in r.json()["new_policy"]  # null: left out


# the Qdrant-server backend (qdrant-client's local mode, its in-process stand-in)


@pytest.fixture
async def server_stack(settings: Settings, runtime: Runtime) -> AsyncIterator[OpsStack]:
    own = settings.model_copy(update={"temporal_task_queue": f"server-{uuid.uuid4().hex[:8]}"})
    vectors = QdrantServerStore.in_memory()
    rt = Runtime(settings=own, pool=runtime.pool, vectors=vectors, temporal=runtime.temporal)
    app = create_app(own, rt)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c,
        worker_of(rt),
    ):
        yield OpsStack(rt, c)
    vectors.close()


async def test_offload_reload_and_first_use_on_the_server_backend(
    server_stack: OpsStack,
) -> None:
    c, rt = server_stack.client, server_stack.runtime
    assert rt.vectors.backend != "edge"
    s = await cold_session(server_stack.make, 700)
    sid, name = s["id"], s["qdrant_collection_name"]
    before = await every_point(c, sid)
    r = await offload(c, sid)
    assert r.status_code == 200, r.text
    assert not await rt.vectors.exists(name)
    assert (await c.get(f"/sessions/{sid}/collection")).json()["points_count"] == 700
    assert await every_point(c, sid) == before  # first use
    assert await rt.vectors.count(name) == 700
    assert (await offload(c, sid)).status_code == 200
    r = await c.post(f"/sessions/{sid}/reload", headers={"Prefer": "wait=60"})
    assert r.status_code == 200 and await every_point(c, sid) == before


async def test_offload_honours_idempotency_keys_and_waits_for_exports(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await cold_session(make, 12)
    sid = s["id"]
    # an export still being written holds the collection: no offload under it
    await runtime.pg.exports.create(str(uuid.uuid4()), sid, None, "export-in-flight")
    r = await offload(client, sid)
    assert r.status_code == 409 and "export-in-flight" in r.json()["detail"]
    await runtime.pool.execute(
        "UPDATE exports SET status = 'ready' WHERE operation_id = 'export-in-flight'"
    )
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = await offload(client, sid, **key)
    assert first.status_code == 200, first.text
    again = await offload(client, sid, **key)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Operation-Id"] == first.headers["Operation-Id"]
    reload_key = {"Idempotency-Key": f"r-{uuid.uuid4().hex}", "Prefer": "wait=60"}
    back = await client.post(f"/sessions/{sid}/reload", headers=reload_key)
    assert back.status_code == 200, back.text
    repeat = await client.post(f"/sessions/{sid}/reload", headers=reload_key)
    assert repeat.status_code == 200 and repeat.json() == back.json()  # not 409 "live"
    assert repeat.headers["Operation-Id"] == back.headers["Operation-Id"]
    assert (await client.post(f"/sessions/{sid}/reload")).status_code == 409  # a new request
    other = await client.post(
        f"/sessions/{make_other(sid)}/offload", headers={"Prefer": "wait=60", **key}
    )
    assert other.status_code == 422  # the same key for another request


# cancelling: the undo runs in reverse


async def wait_for_cancel(started: asyncio.Event) -> None:
    """What a stuck step does: say it started, then heartbeat until it is cancelled."""
    started.set()
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.2)


def stuck_write(started: asyncio.Event, runtime: Runtime) -> Any:
    """``write_offload`` leaving a partial file (as a crashed write would), then stuck."""

    @steps.WRITE_OFFLOAD.fake
    async def write_offload(inp: WriteOffloadInput) -> ArtifactCheck:
        runtime.artifacts.path(part_key(inp.artifact_key)).write_bytes(b"partial")
        await wait_for_cancel(started)

    return write_offload


def stuck_import(started: asyncio.Event) -> Any:
    @steps.IMPORT_POINTS.fake
    async def import_points(inp: ImportPointsInput) -> int:
        await wait_for_cancel(started)

    return import_points


async def test_a_cancelled_offload_leaves_the_session_live(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid, name = s["id"], s["qdrant_collection_name"]
    started = asyncio.Event()
    before = set(os.listdir(runtime.artifacts.root))
    async with ops_stack.worker(stuck_write(started, runtime)):
        r = await c.post(f"/sessions/{sid}/offload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await started.wait()
        assert any(k.startswith("offload-") for k in set(os.listdir(runtime.artifacts.root)))
        assert (await c.post(f"/operations/{op}/cancel")).status_code == 202
        done = await ops_stack.wait(op, "cancelled", "failed", "succeeded")
    assert done["status"] == "cancelled", done
    record = await runtime.pg.sessions.get(sid)
    assert record.storage.value == "live" and record.locked_by is None and record.artifact is None
    assert await runtime.vectors.count(name) == 40
    assert set(os.listdir(runtime.artifacts.root)) <= before  # the partial file is gone


async def test_a_cancelled_reload_leaves_the_session_offloaded(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid, name = s["id"], s["qdrant_collection_name"]
    async with ops_stack.worker():
        assert (await offload(c, sid)).status_code == 200
    offloaded = await runtime.pg.sessions.get(sid)
    assert offloaded.artifact is not None
    started = asyncio.Event()
    async with ops_stack.worker(stuck_import(started)):
        r = await c.post(f"/sessions/{sid}/reload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await started.wait()
        assert await runtime.vectors.exists(name)  # recreated, being filled
        assert (await c.post(f"/operations/{op}/cancel")).status_code == 202
        done = await ops_stack.wait(op, "cancelled", "failed", "succeeded")
    assert done["status"] == "cancelled", done
    after = await runtime.pg.sessions.get(sid)
    assert after.storage.value == "offloaded" and after.locked_by is None
    assert after.artifact == offloaded.artifact
    assert runtime.artifacts.path(offloaded.artifact.key).exists()
    assert not await runtime.vectors.exists(name)


# races found by review (issue 16): each test breaks one on purpose


async def until(check: Any, tries: int = 300) -> bool:
    """Poll ``check()`` (up to ~3 s): how a fault waits for the race it needs, if it comes."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_cancel_while_a_reload_marks_live_keeps_the_points(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """The mark is the reload's point of no return: a cancel arriving while it commits
    must not run the undo (drop the collection) of a session that is live again."""
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid, name = s["id"], s["qdrant_collection_name"]
    async with ops_stack.worker():
        assert (await offload(c, sid)).status_code == 200
    artifact = (await runtime.pg.sessions.get(sid)).artifact
    assert artifact is not None
    marked, cancelled = asyncio.Event(), asyncio.Event()

    @steps.MARK_LIVE.fake
    async def mark_live(inp: MarkLiveInput) -> None:
        await runtime.pg.cold.mark_live(inp.operation_id, inp.session_id, release=inp.release)
        if inp.release:  # the mark has committed; its reply is slow (a busy worker)
            marked.set()
            await cancelled.wait()

            async def dropped() -> bool:
                return not await runtime.vectors.exists(name)

            await until(dropped)

    async with ops_stack.worker(mark_live):
        r = await c.post(f"/sessions/{sid}/reload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await marked.wait()
        assert (await c.post(f"/operations/{op}/cancel")).status_code == 202
        cancelled.set()
        done = await ops_stack.wait(op, "cancelled", "failed", "succeeded")
    assert done["status"] == "succeeded", done  # past the mark, a cancel is too late
    record = await runtime.pg.sessions.get(sid)
    assert record.storage.value == "live" and record.locked_by is None
    assert await runtime.vectors.count(name) == 40
    assert len(await every_point(c, sid)) == 40


async def test_a_cancel_while_an_offload_marks_leaves_one_consistent_state(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """An offload's mark that lands late, after a cancel: its undo (unmark, delete the
    artifact, release) must not run before it, or the session is left offloaded with its
    artifact deleted."""
    c = ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid, name = s["id"], s["qdrant_collection_name"]
    reached, cancelled = asyncio.Event(), asyncio.Event()

    @steps.MARK_OFFLOADED.fake
    async def late_mark(inp: MarkOffloadedInput) -> None:
        reached.set()
        await cancelled.wait()
        a = inp.artifact

        async def undone() -> bool:
            return not runtime.artifacts.path(a.key).exists()

        await until(undone)  # the undo deleted the artifact (the old code), or 3 s passed
        await runtime.pg.cold.mark_offloaded(
            inp.operation_id,
            inp.session_id,
            ArtifactRef(key=a.key, points=a.points, sha256=a.sha256, size_bytes=a.size_bytes),
        )

    async with ops_stack.worker(late_mark):
        r = await c.post(f"/sessions/{sid}/offload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await reached.wait()
        assert (await c.post(f"/operations/{op}/cancel")).status_code == 202
        cancelled.set()
        done = await ops_stack.wait(op, "cancelled", "failed", "succeeded")
        record = await runtime.pg.sessions.get(sid)
        assert record.locked_by is None
        if record.storage.value == "offloaded":
            assert record.artifact is not None
            assert runtime.artifacts.path(record.artifact.key).exists(), done
            assert not await runtime.vectors.exists(name)
        else:
            assert done["status"] == "cancelled" and record.artifact is None
            assert await runtime.vectors.count(name) == 40
        assert len(await every_point(c, sid, Prefer="wait=60")) == 40


class GatedVectors:
    """The API's vector store, whose ``ensure_collection`` (the first vector call of a
    points write, past its checks) waits for a gate once."""

    def __init__(self, real: Any, gate: asyncio.Event, entered: asyncio.Event) -> None:
        self._real, self._gate, self._entered, self._used = real, gate, entered, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def ensure_collection(self, *a: Any) -> None:
        if not self._used:
            self._used = True
            self._entered.set()
            await self._gate.wait()
        await self._real.ensure_collection(*a)


async def test_an_acknowledged_write_racing_an_offload_is_kept(ops_stack: OpsStack) -> None:
    """A points write past its checks when an offload starts: the offload's hold waits for
    it, so the artifact holds it (the old code wrote it into the collection after the
    artifact was written and dropped it: acknowledged, then lost)."""
    rt, c = ops_stack.runtime, ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid = s["id"]
    gate, entered = asyncio.Event(), asyncio.Event()
    rt.sessions.vectors = GatedVectors(rt.vectors, gate, entered)  # type: ignore[assignment]
    real = ColdSteps(TransferSteps(rt.pg, rt.vectors, rt.artifacts))
    written, upsert_done = asyncio.Event(), asyncio.Event()

    @steps.VERIFY_OFFLOAD.fake
    async def verify_offload(inp: VerifyOffloadInput) -> Any:
        written.set()
        await until(lambda: asyncio.sleep(0, upsert_done.is_set()))
        return await real.verify_offload(inp)

    async with ops_stack.worker(verify_offload):
        up = asyncio.ensure_future(
            c.put(
                f"/sessions/{sid}/points",
                json={"points": [{"id": 1, "vector": [9.0] * 8, "payload": {"new": True}}]},
            )
        )
        await entered.wait()  # the write passed its checks (session live, not held)
        r = await c.post(f"/sessions/{sid}/offload", headers={"Prefer": "respond-async"})
        op = r.json()["id"]
        await until(lambda: asyncio.sleep(0, written.is_set()))  # the old code got here
        gate.set()
        w = await up
        upsert_done.set()
        done = await ops_stack.wait(op, "succeeded", "failed", "cancelled")
        assert w.status_code == 200, w.text
        assert done["status"] == "succeeded", done
        pts = await every_point(c, sid, Prefer="wait=60")
    assert len(pts) == 40 and pts[1][1] == {"new": True}


async def test_a_write_racing_an_offload_never_recreates_the_collection(
    ops_stack: OpsStack,
) -> None:
    """A points write past its checks while an offload runs to its drop: the write lands
    before the hold (and in the artifact) or gets 409, never in a collection recreated for
    an offloaded session (the old code acknowledged it into an orphan collection, which
    then broke the reload's count check)."""
    rt, c = ops_stack.runtime, ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid, name = s["id"], s["qdrant_collection_name"]
    gate, entered = asyncio.Event(), asyncio.Event()
    rt.sessions.vectors = GatedVectors(rt.vectors, gate, entered)  # type: ignore[assignment]
    async with ops_stack.worker():
        up = asyncio.ensure_future(
            c.put(
                f"/sessions/{sid}/points",
                json={"points": [{"id": 999, "vector": [9.0] * 8, "payload": {"new": True}}]},
            )
        )
        await entered.wait()
        off = asyncio.ensure_future(offload(c, sid))
        await until(lambda: asyncio.sleep(0, off.done()))  # the old code dropped meanwhile
        gate.set()
        w, r = await up, await off
        assert w.status_code == 200, w.text
        assert r.status_code == 200 and r.json()["points"] == 41, r.text
        record = await rt.pg.sessions.get(sid)
        assert record.storage.value == "offloaded" and not await rt.vectors.exists(name)
        pts = await every_point(c, sid, Prefer="wait=60")
    assert len(pts) == 41 and pts[999][1] == {"new": True}


async def test_an_offload_without_the_api_refuses_while_an_export_is_written(
    ops_stack: OpsStack,
) -> None:
    """Retention's offloads never pass the API's check: the workflow's hold refuses an
    export being written (the old one dropped the collection under it)."""
    rt = ops_stack.runtime
    s = await cold_session(ops_stack.make, 12)
    sid, name = s["id"], s["qdrant_collection_name"]
    await rt.pg.exports.create(str(uuid.uuid4()), sid, None, "export-in-flight-r2")
    async with ops_stack.worker():
        h = await rt.temporal.start_workflow(
            registry.OFFLOAD.name,
            OffloadInput(session_id=sid, options=rt.operations.options()),
            id=f"offload-{uuid.uuid4().hex}",
            task_queue=rt.settings.temporal_task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await h.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "Locked", cause
    assert "export-in-flight-r2" in cause.message
    record = await rt.pg.sessions.get(sid)
    assert record.storage.value == "live" and record.locked_by is None
    assert await rt.vectors.count(name) == 12


async def test_no_export_starts_while_an_offload_holds_the_session(
    make: Factory, runtime: Runtime
) -> None:
    sid = (await make.session())["id"]
    await runtime.pg.locks.lock("offload-x", [sid])
    with pytest.raises(Locked, match="offload-x"):
        await runtime.pg.exports.create(str(uuid.uuid4()), sid, None, "export-late")
    assert await runtime.pg.exports.in_flight(sid) is None


class DroppingVectors:
    """A vector store whose collection is dropped (as an offload would) after the first
    page an export scrolls."""

    def __init__(self, real: Any) -> None:
        self._real, self._pages = real, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def scroll_rows(self, collection: str, **kw: Any) -> Any:
        self._pages += 1
        if self._pages == 2:
            await self._real.drop_collection(collection)
        return await self._real.scroll_rows(collection, **kw)


async def test_an_export_whose_collection_is_dropped_fails(ops_stack: OpsStack) -> None:
    """An export never reports 'ready' with a part of the points."""
    rt, c = ops_stack.runtime, ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid = s["id"]
    real = TransferSteps(rt.pg, DroppingVectors(rt.vectors), rt.artifacts)  # type: ignore[arg-type]

    @steps.WRITE_EXPORT.fake
    async def write_export(inp: WriteExportInput) -> Any:
        return await real.write_export(inp)

    async with ops_stack.worker(write_export):
        r = await c.post(f"/sessions/{sid}/exports", headers={"Prefer": "wait=60"})
        assert r.status_code == 409, r.text
    assert "dropped" in r.json()["detail"]
    assert await rt.pg.exports.page(sid, 10, None) == []  # undone: no export, ready or not


def test_publish_makes_the_rename_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact's new name reaches the disk (its directory is fsynced after the
    rename) before an offload records it and drops the collection."""
    store = DirectoryStore(tmp_path)
    with store.open_append("a.part") as f:
        f.write(b"points")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a: Any, b: Any) -> None:
        events.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.publish("a.part", "a")
    assert events == ["fsync file", "replace", "fsync dir"]
    assert store.size("a") == 6 and store.size("a.part") is None


async def test_the_offloaded_listing_pages_what_the_caller_can_read(
    client: httpx.AsyncClient, make: Factory
) -> None:
    """Access is filtered before the limit: a user's page holds their sessions, not the
    first ``limit`` of everyone's filtered down to nothing."""
    users = [make.user(), make.user()]
    sids = []
    for u in users:
        s = await cold_session(make, 3, owner_id=u)
        assert (await offload(client, s["id"])).status_code == 200
        sids.append(s["id"])
    # the user whose session comes later in id order (Postgres orders uuids as bytes)
    later = max(range(2), key=lambda k: uuid.UUID(sids[k]).bytes)
    page = await client.get(
        "/sessions/offloaded", params={"limit": 1}, headers={"X-User-Id": users[later]}
    )
    assert page.status_code == 200
    assert [i["session_id"] for i in page.json()] == [sids[later]]
    after = await client.get(
        "/sessions/offloaded",
        params={"limit": 1, "after": sids[later]},
        headers={"X-User-Id": users[later]},
    )
    assert after.json() == []


async def test_retention_counts_held_offload_candidates(
    rstack: RetentionStack,  # noqa: F811 - the fixture imported above
) -> None:
    """A held offload candidate is a skipped session even on a page with nothing else to
    offload, as the dry run says."""
    policy = {"auto_delete_archived_days": 90, "offload_archived_after_days": 20}
    held = await aged(rstack, "archived", 40)
    await rstack.runtime.pool.execute(
        "UPDATE sessions SET locked_by = 'merge-x' WHERE id = $1", uuid.UUID(held)
    )
    async with rstack.worker():
        dry = await rstack.client.post("/sessions/cleanup", params={"dry_run": "true"}, json=policy)
        real = await rstack.client.post("/sessions/cleanup", json=policy)
    assert dry.status_code == 200 and real.status_code == 200, (dry.text, real.text)
    assert dry.json()["cleanup_stats"]["skipped_locked_count"] == 1
    stats = real.json()["cleanup_stats"]
    assert stats["skipped_locked_count"] == 1 and stats["offloaded_count"] == 0


class GateOnce:
    """A vector store whose ``method`` waits for a gate on its first call: a read past its
    checks, held while an offload runs to its drop."""

    def __init__(self, real: Any, method: str, gate: asyncio.Event, entered: asyncio.Event) -> None:
        self._real, self._method, self._gate, self._entered = real, method, gate, entered
        self._used = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._real, name)
        if name != self._method or self._used:
            return call

        async def gated(*a: Any, **kw: Any) -> Any:
            self._used = True
            self._entered.set()
            await self._gate.wait()
            return await call(*a, **kw)

        return gated


@pytest.mark.parametrize("method", ["collection_params", "scroll", "query"])
async def test_a_read_racing_the_drop_brings_the_points_back(
    ops_stack: OpsStack, method: str
) -> None:
    """A read that passed its checks while the session was live, then finds the collection
    dropped: it goes through first use (reload, then answer), never "no points"."""
    rt, c = ops_stack.runtime, ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid = s["id"]
    gate, entered = asyncio.Event(), asyncio.Event()
    rt.sessions.vectors = GateOnce(rt.vectors, method, gate, entered)  # type: ignore[assignment]
    async with ops_stack.worker():
        if method == "query":
            read = c.post(
                f"/sessions/{sid}/points/query",
                json={"vector": [0.0] * 8, "limit": 3},
                headers={"Prefer": "wait=60"},
            )
        else:
            read = c.get(f"/sessions/{sid}/points", headers={"Prefer": "wait=60"})
        pending = asyncio.ensure_future(read)
        await entered.wait()
        assert (await offload(c, sid)).status_code == 200
        gate.set()
        r = await pending
    assert r.status_code == 200, r.text
    assert len(r.json()["points"]) == (3 if method == "query" else 40)
    assert (await rt.pg.sessions.get(sid)).storage.value == "live"


async def test_an_export_document_racing_the_drop_brings_the_points_back(
    ops_stack: OpsStack,
) -> None:
    rt, c = ops_stack.runtime, ops_stack.client
    s = await cold_session(ops_stack.make, 40)
    sid = s["id"]
    gate, entered = asyncio.Event(), asyncio.Event()
    rt.transfers.vectors = GateOnce(rt.vectors, "collection_params", gate, entered)  # type: ignore[assignment]
    async with ops_stack.worker():
        pending = asyncio.ensure_future(
            c.get(f"/sessions/{sid}/export", headers={"Prefer": "wait=60"})
        )
        await entered.wait()
        assert (await offload(c, sid)).status_code == 200
        gate.set()
        r = await pending
    assert r.status_code == 200, r.text
    assert r.json()["collection_data"]["exported_points"] == 40
