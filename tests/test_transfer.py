"""Export documents, export artifacts and imports (API.md sections A and D), with the
guarantees of section B broken on purpose: bad artifacts, failure, killed worker."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import io
import json
import os
import time
from typing import Any

import httpx
import pytest
from temporalio import activity

from session_service.domain import export_format as fmt
from session_service.services.runtime import Runtime
from session_service.temporal import steps
from session_service.temporal.activities import TransferSteps
from session_service.temporal.contracts import ExportResult, ImportPointsInput, WriteExportInput
from tests.conftest import Factory, OpsStack
from tests.test_operations import point_ids, seeded

pytestmark = pytest.mark.usefixtures("worker")


async def session_with_points(make: Factory, n: int, **fields: Any) -> dict[str, Any]:
    s = await seeded(make, list(range(n)), tag="orig", **fields)
    await make.client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": n})
    await make.client.put(
        f"/sessions/{s['id']}/model-usage",
        params={"model_type": "embedding", "model_name": "minilm"},
    )
    return s


async def full_points(client: httpx.AsyncClient, sid: str) -> dict[Any, Any]:
    page = (
        await client.get(f"/sessions/{sid}/points", params={"limit": 1000, "with_vectors": "true"})
    ).json()
    return {p["id"]: (p["vector"], p["payload"]) for p in page["points"]}


def same_points(a: dict[Any, Any], b: dict[Any, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][1] == b[k][1]
        assert a[k][0] == pytest.approx(b[k][0], rel=1e-6)


async def staging_files(runtime: Runtime) -> list[str]:
    return [p for p in os.listdir(runtime.artifacts.root) if p.startswith("staging-")]


async def test_export_document_is_streamed_with_section_a_shape(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await session_with_points(make, 30)
    r = await client.get(f"/sessions/{s['id']}/export")
    assert r.status_code == 200
    doc = r.json()
    assert doc["session"]["id"] == s["id"] and doc["export_timestamp"]
    data = doc["collection_data"]
    assert data["collection_name"] == s["qdrant_collection_name"]
    assert data["exported_points"] == 30 and len(data["points"]) == 30
    assert set(data["points"][0]) == {"id", "vector", "payload"}
    bare = (
        await client.get(f"/sessions/{s['id']}/export", params={"include_data": "false"})
    ).json()
    assert bare["collection_data"] is None and bare["session"]["id"] == s["id"]


async def test_inline_document_round_trip(client: httpx.AsyncClient, make: Factory) -> None:
    s = await session_with_points(make, 25, tags=["research"], metadata={"k": 1})
    doc = (await client.get(f"/sessions/{s['id']}/export")).json()
    r = await client.post("/sessions/import", params={"new_name": "Copy"}, json=doc)
    assert r.status_code == 200, r.text
    assert r.headers["Operation-Id"].startswith("import-")
    new = r.json()
    assert new["id"] != s["id"] and new["name"] == "Copy"
    assert new["tags"] == ["research", "imported"]
    original = (await client.get(f"/sessions/{s['id']}")).json()
    assert new["metadata"] == {**original["metadata"], "imported_from": s["id"]}
    assert new["configuration"] == s["configuration"]
    assert new["processing_stats"]["urls_processed"] == 25
    assert new["model_usage_history"]["embedding_models_used"] == ["minilm"]
    same_points(await full_points(client, new["id"]), await full_points(client, s["id"]))


async def test_artifact_export_download_and_imports(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await session_with_points(make, 40)
    r = await client.post(f"/sessions/{s['id']}/exports")
    assert r.status_code == 200, r.text
    result = r.json()
    assert set(result) == {"export_id", "size_bytes", "points", "sha256"}
    assert result["points"] == 40
    export_id = result["export_id"]
    meta = (await client.get(f"/exports/{export_id}")).json()
    assert meta["status"] == "ready" and meta["session_id"] == s["id"]
    assert meta["sha256"] == result["sha256"] and meta["size_bytes"] == result["size_bytes"]
    listed = (await client.get("/exports", params={"session_id": s["id"]})).json()
    assert [e["export_id"] for e in listed] == [export_id]

    dl = await client.get(f"/exports/{export_id}/download")
    assert dl.status_code == 200
    blob = dl.content
    assert int(dl.headers["content-length"]) == len(blob) == result["size_bytes"]
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    assert dl.headers["repr-digest"] == f"sha-256=:{digest}:"
    lines = gzip.decompress(blob).splitlines(keepends=True)
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["format"] == fmt.FORMAT and header["version"] == fmt.VERSION
    assert header["session"]["id"] == s["id"] and header["vector_size"] == 4
    assert trailer["trailer"] == {
        "points": 40,
        "sha256": hashlib.sha256(b"".join(lines[:-1])).hexdigest(),
    }
    assert len(lines) == 42

    by_id = await client.post("/sessions/import", json={"export_id": export_id})
    assert by_id.status_code == 200, by_id.text
    upload = await client.post(
        "/sessions/import",
        content=blob,
        params={"new_name": "Up"},
        headers={"content-type": "application/gzip"},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["name"] == "Up"
    plain = await client.post(
        "/sessions/import",
        content=gzip.decompress(blob),
        headers={"content-type": "application/x-ndjson"},
    )
    assert plain.status_code == 200, plain.text
    original = await full_points(client, s["id"])
    for r in (by_id, upload, plain):
        assert r.json()["metadata"]["imported_from"] == s["id"]
        same_points(await full_points(client, r.json()["id"]), original)
    assert await staging_files(runtime) == []
    assert (await client.get(f"/exports/{export_id}")).status_code == 200  # export kept

    assert (await client.delete(f"/exports/{export_id}")).status_code == 200
    assert (await client.get(f"/exports/{export_id}")).status_code == 404
    assert (await client.get(f"/exports/{export_id}/download")).status_code == 404


def artifact(
    points: list[dict[str, Any]],
    *,
    size: int = 4,
    version: int = 1,
    count: int | None = None,
    sha: str | None = None,
) -> bytes:
    head = (
        json.dumps(
            {
                "format": fmt.FORMAT,
                "version": version,
                "vector_size": size,
                "distance": "Dot",
                "exported_at": "x",
                "session": {"id": "orig", "name": "n"},
            }
        ).encode()
        + b"\n"
    )
    body = b"".join(json.dumps(p).encode() + b"\n" for p in points)
    sha = sha or hashlib.sha256(head + body).hexdigest()
    tail = (
        json.dumps(
            {"trailer": {"points": len(points) if count is None else count, "sha256": sha}}
        ).encode()
        + b"\n"
    )
    return gzip.compress(head + body + tail)


GOOD = [{"id": i, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {}} for i in range(20)]


def flip(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :]


BAD = {
    "truncated": (artifact(GOOD)[: len(artifact(GOOD)) // 2], "truncated"),
    "flipped byte": (flip(artifact(GOOD)), ""),
    "wrong version": (artifact(GOOD, version=2), "version"),
    "wrong vector length": (
        artifact([*GOOD, {"id": 99, "vector": [1.0], "payload": {}}]),
        "vector_size is 4",
    ),
    "bad point id": (artifact([{"id": "nope", "vector": [0.0] * 4}]), "uuid"),
    "count mismatch": (artifact(GOOD, count=3), "trailer counts 3"),
    # an intact gzip (no CRC error) whose content doesn't match its trailer's SHA-256
    "wrong sha256": (artifact(GOOD, sha=hashlib.sha256(b"other").hexdigest()), "SHA-256"),
    "no trailer": (
        gzip.compress(gzip.decompress(artifact(GOOD)).rsplit(b"\n", 2)[0] + b"\n"),
        "trailer",
    ),
    "not an artifact": (gzip.compress(b'{"hello": 1}\n'), "header"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
async def test_bad_artifacts_are_422_and_create_nothing(
    client: httpx.AsyncClient, runtime: Runtime, case: str
) -> None:
    blob, words = BAD[case]
    user = Factory.user()
    before = await runtime.vectors.collection_names()
    r = await client.post(
        "/sessions/import",
        content=blob,
        headers={"content-type": "application/gzip", "X-User-Id": user},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert words.lower() in r.json()["detail"].lower()
    assert (await client.get("/sessions", headers={"X-User-Id": user})).json() == []
    assert await runtime.vectors.collection_names() == before
    assert await staging_files(runtime) == []


async def test_bad_inline_documents(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/sessions/import",
        json={
            "session": {"name": "x"},
            "collection_data": {
                "points": [{"id": 1, "vector": [1.0, 2.0]}, {"id": 2, "vector": [1.0]}]
            },
        },
    )
    assert r.status_code == 422 and "vector_size is 2" in r.json()["detail"]
    r = await client.post("/sessions/import", json={"no": "session"})
    assert r.status_code == 422
    r = await client.post("/sessions/import", json={"export_id": "nope"})
    assert r.status_code == 404
    r = await client.post("/sessions/import", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def failing_import(rt: Runtime, after_batches: int) -> Any:
    real = TransferSteps(rt.pg, rt.vectors, rt.artifacts)

    @steps.IMPORT_POINTS.fake
    async def import_points(inp: ImportPointsInput) -> int:
        await real.import_points(inp.model_copy(update={"batch_size": inp.batch_size}))
        raise RuntimeError("injected after copying")

    return import_points


async def test_failing_import_leaves_nothing(ops_stack: OpsStack, runtime: Runtime) -> None:
    c = ops_stack.client
    user = Factory.user()
    before = await runtime.vectors.collection_names()
    async with ops_stack.worker(failing_import(runtime, 2)):
        r = await c.post(
            "/sessions/import",
            content=artifact(GOOD),
            headers={"content-type": "application/gzip", "X-User-Id": user},
        )
    assert r.status_code == 500
    assert (await c.get("/sessions", headers={"X-User-Id": user})).json() == []
    assert await runtime.vectors.collection_names() == before
    assert await staging_files(runtime) == []


async def test_validation_longer_than_the_heartbeat_timeout_succeeds(
    ops_stack: OpsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validation that takes longer than OP_HEARTBEAT_TIMEOUT_SECONDS (2 s here) must
    still heartbeat (it used to time out on every attempt)."""
    real = fmt.validate

    def slow_validate(raw: Any, *args: Any) -> fmt.Header:
        time.sleep(5)  # fault injection: a big artifact on a slow disk
        return real(raw, *args)

    monkeypatch.setattr(fmt, "validate", slow_validate)
    c = ops_stack.client
    async with ops_stack.worker():
        r = await c.post(
            "/sessions/import",
            content=artifact(GOOD),
            headers={"content-type": "application/gzip", "Prefer": "respond-async"},
        )
        op = await ops_stack.wait(r.json()["id"], "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    col = (await c.get(f"/sessions/{op['result']['id']}/collection")).json()
    assert col["points_count"] == len(GOOD)


def stalling_import(rt: Runtime, stalled: asyncio.Event, seen: list[int]) -> Any:
    real = TransferSteps(rt.pg, rt.vectors, rt.artifacts)

    @steps.IMPORT_POINTS.fake
    async def import_points(inp: ImportPointsInput) -> int:
        seen.append(len(activity.info().heartbeat_details))
        if len(seen) == 1:  # first attempt: one batch, a checkpoint, then freeze
            points = fmt.iter_points(rt.artifacts.open_read(inp.artifact_key))
            batch = [next(points) for _ in range(inp.batch_size)]
            from session_service.stores.vector_store import StoredPoint

            await rt.vectors.upsert(inp.collection, [StoredPoint(*p) for p in batch])
            activity.heartbeat(len(batch))
            stalled.set()
            await asyncio.Event().wait()
        return await real.import_points(inp)

    return import_points


async def test_worker_killed_mid_import_finishes_exactly(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c = ops_stack.client
    pts = [{"id": i, "vector": [float(i), 1.0, 2.0, 3.0], "payload": {"i": i}} for i in range(95)]
    stalled, seen = asyncio.Event(), []
    doomed = ops_stack.worker(stalling_import(runtime, stalled, seen))
    task = asyncio.create_task(doomed.run())
    r = await c.post(
        "/sessions/import",
        content=artifact(pts),
        headers={"content-type": "application/gzip", "Prefer": "respond-async"},
    )
    op_id = r.json()["id"]
    await asyncio.wait_for(stalled.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with ops_stack.worker(stalling_import(runtime, stalled, seen)):
        op = await ops_stack.wait(op_id, "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    assert seen == [0, 1]  # the retry started from the heartbeated checkpoint
    got = await point_ids(c, op["result"]["id"])
    assert sorted(got) == list(range(95)) and got[7] == {"i": 7}


class FreezingVectors:
    """The real vector store, except that scrolling freezes after ``after`` batches."""

    def __init__(self, real: Any, after: int, stalled: asyncio.Event) -> None:
        self.real, self.after, self.stalled, self.calls = real, after, stalled, 0

    async def scroll_rows(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.after:
            self.stalled.set()
            await asyncio.Event().wait()
        return await self.real.scroll_rows(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def stalling_export(rt: Runtime, stalled: asyncio.Event) -> Any:
    frozen = TransferSteps(rt.pg, FreezingVectors(rt.vectors, 3, stalled), rt.artifacts)  # type: ignore[arg-type]
    return frozen.write_export


async def test_failing_export_leaves_no_artifact(ops_stack: OpsStack, runtime: Runtime) -> None:
    c, make = ops_stack.client, ops_stack.make
    s = await seeded(make, list(range(30)), tag="x")
    real = TransferSteps(runtime.pg, runtime.vectors, runtime.artifacts)

    @steps.WRITE_EXPORT.fake
    async def write_export(inp: WriteExportInput) -> ExportResult:
        await real.write_export(inp.model_copy(update={"export_id": inp.export_id}))
        raise RuntimeError("injected after writing")

    files = set(os.listdir(runtime.artifacts.root))
    async with ops_stack.worker(write_export):
        r = await c.post(f"/sessions/{s['id']}/exports")
    assert r.status_code == 500
    assert (await c.get("/exports", params={"session_id": s["id"]})).json() == []
    assert set(os.listdir(runtime.artifacts.root)) == files


@pytest.mark.parametrize("file_lost_its_tail", [False, True])
async def test_export_resumes_from_checkpoint(
    ops_stack: OpsStack, runtime: Runtime, file_lost_its_tail: bool
) -> None:
    """A retried export continues from its checkpoint; if the file is shorter than the
    checkpoint says (its tail never reached the disk), it starts over instead."""
    c, make = ops_stack.client, ops_stack.make
    s = await seeded(make, list(range(95)), tag="x")
    stalled = asyncio.Event()
    task = asyncio.create_task(ops_stack.worker(stalling_export(runtime, stalled)).run())
    r = await c.post(f"/sessions/{s['id']}/exports", headers={"Prefer": "respond-async"})
    op_id = r.json()["id"]
    await asyncio.wait_for(stalled.wait(), 30)
    # the third batch was handed to the writer thread before the fourth scroll froze:
    # it lands on disk, but its checkpoint is never heartbeated
    await asyncio.sleep(0.5)
    part = [p for p in os.listdir(runtime.artifacts.root) if p.endswith(".part")]
    sizes = {p: os.path.getsize(runtime.artifacts.root / p) for p in part}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if file_lost_its_tail:
        for name in part:
            os.truncate(runtime.artifacts.root / name, 10)
    real = TransferSteps(runtime.pg, runtime.vectors, runtime.artifacts)
    resumed_at: list[Any] = []

    @steps.WRITE_EXPORT.fake
    async def recording(inp: WriteExportInput) -> ExportResult:
        resumed_at.append(activity.info().heartbeat_details)
        return await real.write_export(inp)

    async with ops_stack.worker(recording):
        op = await ops_stack.wait(op_id, "succeeded", "failed", timeout=90)
    assert op["status"] == "succeeded", op
    # the retry continued after the batches written before the freeze, from the last
    # checkpoint, which ends before the bytes of the batch written after it
    assert resumed_at and resumed_at[0][0]["points"] == 20
    result = op["result"]
    written = sizes[f"{result['export_id']}.ndjson.gz.part"]
    assert 0 < resumed_at[0][0]["file_bytes"] < written
    assert result["points"] == 95
    blob = (await c.get(f"/exports/{result['export_id']}/download")).content
    header = fmt.validate(io.BytesIO(blob))
    assert header.points == 95 and header.sha256 == result["sha256"]
    ids = [p[0] for p in fmt.iter_points(io.BytesIO(blob))]
    assert sorted(ids) == list(range(95))  # no duplicate, no missing point


async def test_upload_larger_than_the_body_limit(client: httpx.AsyncClient) -> None:
    noise = base64.b64encode(os.urandom(300_000)).decode()
    pts = [{"id": i, "vector": [0.5] * 4, "payload": {"blob": noise}} for i in range(120)]
    blob = artifact(pts)
    assert len(blob) > 32 * 1024 * 1024
    r = await client.post(
        "/sessions/import", content=blob, headers={"content-type": "application/gzip"}
    )
    assert r.status_code == 200, r.text
    col = (await client.get(f"/sessions/{r.json()['id']}/collection")).json()
    assert col["points_count"] == 120


async def test_exports_follow_session_access(client: httpx.AsyncClient, make: Factory) -> None:
    alice, bob = Factory.user(), Factory.user()
    s = await seeded(make, [1, 2], tag="a", owner=alice)
    r = await client.post(f"/sessions/{s['id']}/exports", headers={"X-User-Id": alice})
    assert r.status_code == 200, r.text
    export_id = r.json()["export_id"]
    for path in (f"/exports/{export_id}", f"/exports/{export_id}/download"):
        assert (await client.get(path, headers={"X-User-Id": alice})).status_code == 200
        assert (await client.get(path, headers={"X-User-Id": bob})).status_code == 404
    mine = await client.get("/exports", params={"session_id": s["id"]}, headers={"X-User-Id": bob})
    assert mine.json() == []
    assert (
        await client.post(f"/sessions/{s['id']}/exports", headers={"X-User-Id": bob})
    ).status_code == 404
    r = await client.post(
        "/sessions/import", json={"export_id": export_id}, headers={"X-User-Id": bob}
    )
    assert r.status_code == 404
    assert (
        await client.delete(f"/exports/{export_id}", headers={"X-User-Id": bob})
    ).status_code == 404
    r = await client.post(
        "/sessions/import", json={"export_id": export_id}, headers={"X-User-Id": alice}
    )
    assert r.status_code == 200 and r.json()["owner_id"] == alice


def test_older_artifacts_still_parse() -> None:
    """What ``json`` wrote and orjson refuses (NaN, integers past 64 bits, integer vector
    values) still validates and imports."""
    pts = [
        {"id": 1, "vector": [1, 2, 3, 4], "payload": {"big": 2**70}},
        {"id": 2, "vector": [0.5, 1.5, 2.5, 3.5], "payload": {"x": float("nan")}},
    ]
    blob = artifact(pts)
    header = fmt.validate(io.BytesIO(blob))
    assert header.points == 2
    got = list(fmt.iter_points(io.BytesIO(blob)))
    assert got[0][1] == [1.0, 2.0, 3.0, 4.0] and all(type(v) is float for v in got[0][1])
    assert got[0][2] == {"big": 2**70}
    assert list(fmt.iter_points(io.BytesIO(blob), skip=1))[0][0] == 2
    bools = artifact([{"id": 1, "vector": [True, 1.0, 2.0, 3.0]}])
    with pytest.raises(fmt.InvalidArtifact, match="other than numbers"):
        fmt.validate(io.BytesIO(bools))


async def test_long_thread_calls_repeat_the_checkpoint_while_they_run() -> None:
    """A rehash or an fsync can outlast the heartbeat timeout: the coroutine heartbeats
    meanwhile, with the checkpoint (a beat without it would erase it)."""
    from datetime import timedelta

    from temporalio.testing import ActivityEnvironment

    from session_service.temporal.activities.transfer_steps import in_thread

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    got = await env.run(in_thread, lambda: time.sleep(0.5) or 7, details=({"points": 3},))
    assert got == 7
    assert len(beats) >= 3 and all(b == ({"points": 3},) for b in beats)


def test_non_finite_numbers_survive_the_artifact_format() -> None:
    """orjson would write NaN and infinities as null; the artifact keeps them as ``json``
    does, in vectors (numpy pages) and payloads alike, and reads them back."""
    import math

    import numpy as np

    from session_service.domain import export_format as fmt

    vectors = np.array([[1.0, float("nan")], [0.5, 0.25], [float("inf"), 2.0]], dtype=np.float32)
    payloads = [{"score": 1.5}, {"score": float("-inf"), "n": [float("nan")]}, None]
    lines = fmt.point_lines([1, 2, 3], vectors, payloads).splitlines()
    back = [fmt.loads(line) for line in lines]
    assert back[0]["id"] == 1 and math.isnan(back[0]["vector"][1])
    assert back[1]["payload"]["score"] == float("-inf") and math.isnan(back[1]["payload"]["n"][0])
    assert back[1]["vector"] == [0.5, 0.25]
    assert back[2]["vector"][0] == float("inf") and back[2]["payload"] == {}
    header = fmt.loads(fmt.header_line({"metadata": {"x": float("nan")}}, 2, "Cosine", "t"))
    assert math.isnan(header["session"]["metadata"]["x"])
