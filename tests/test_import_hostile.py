"""Hostile imports (API.md section D): bombs, huge lines, bad headers, deep nesting; and
workflows that must end whatever goes wrong inside them."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from isal import isal_zlib
from temporalio import activity

from session_service.api.app import create_app
from session_service.domain import export_format as fmt
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import steps
from session_service.temporal.activities import PointSteps, TransferSteps
from session_service.temporal.contracts import (
    CopyInput,
    CopyResult,
    FinishImportInput,
    ImportPointsInput,
)
from tests.conftest import Factory, OpsStack
from tests.test_operations import seeded
from tests.test_transfer import artifact, staging_files

pytestmark = pytest.mark.usefixtures("worker")

LINE_LIMIT = 1024 * 1024
INFLATED_LIMIT = 32 * 1024 * 1024
UPLOAD_LIMIT = 4 * 1024 * 1024


class LimitedStack(OpsStack):
    """An ops stack whose API and workers read imports within small limits (its settings)."""

    def steps(self) -> TransferSteps:
        rt = self.runtime
        return TransferSteps(rt.pg, rt.vectors, rt.artifacts, fmt.Limits.of(rt.settings))


@pytest.fixture
async def limited(settings: Settings, runtime: Runtime) -> AsyncIterator[LimitedStack]:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"test-{uuid.uuid4().hex[:8]}",
            "op_batch_size": 10,
            "op_heartbeat_timeout_seconds": 2.0,
            "op_maximum_attempts": 3,
            "max_import_bytes": UPLOAD_LIMIT,
            "max_import_inflated_bytes": INFLATED_LIMIT,
            "max_import_line_bytes": LINE_LIMIT,
        }
    )
    rt = Runtime(
        settings=own, pool=runtime.pool, vectors=runtime.vectors, temporal=runtime.temporal
    )
    transport = httpx.ASGITransport(app=create_app(own, rt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
        yield LimitedStack(rt, c)


def header(session: dict[str, Any] | None = None, size: int = 4) -> bytes:
    return fmt.header_line(session or {"id": "orig", "name": "n"}, size, "Dot", "x")


POINT = fmt.point_line(1, [0.1, 0.2, 0.3, 0.4], {})


def gzip_stream(parts: Iterator[bytes]) -> bytes:
    """A gzip of everything ``parts`` yields, compressed as it comes (bombs stay small)."""
    packer = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    out = [packer.compress(p) for p in parts]
    out.append(packer.flush())
    return b"".join(out)


def zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(chunk)
    for _ in range(total // chunk):
        yield block


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Samples this process's RSS while the block runs; yields [baseline, peak]."""
    out = [rss_mb(), rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            out[1] = max(out[1], rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()


async def nothing_created(c: httpx.AsyncClient, runtime: Runtime, user: str, before: Any) -> None:
    assert (await c.get("/sessions", headers={"X-User-Id": user})).json() == []
    assert await runtime.vectors.collection_names() == before
    assert await staging_files(runtime) == []


def upload(blob: bytes, user: str, ctype: str = "application/gzip") -> dict[str, Any]:
    return {"content": blob, "headers": {"content-type": ctype, "X-User-Id": user}}


# gzip bombs and long lines


@pytest.mark.parametrize("where", ["header", "after the header"])
async def test_gzip_bomb_is_refused_with_flat_memory(
    limited: LimitedStack, runtime: Runtime, where: str
) -> None:
    """A 1 GiB line of zeros in a 1 MiB gzip: read within the line limit, never whole."""
    bomb = gzip_stream(iter([header() if where != "header" else b"", *zeros(1 << 30)]))
    assert len(bomb) < 2 * 1024 * 1024
    c, user = limited.client, Factory.user()
    before = await runtime.vectors.collection_names()
    async with limited.worker():
        with peak_rss() as rss:
            r = await c.post("/sessions/import", **upload(bomb, user))
    assert r.status_code == 422, r.text
    line = 1 if where == "header" else 2
    assert f"line {line} is longer than {LINE_LIMIT} bytes" in r.json()["detail"]
    assert rss[1] - rss[0] < 48, rss
    await nothing_created(c, runtime, user, before)


async def test_inflated_size_limit_fails_the_operation_once(
    limited: LimitedStack, runtime: Runtime
) -> None:
    """Valid lines that inflate past MAX_IMPORT_INFLATED_BYTES: the operation fails at
    once with 422 (no retries) and leaves nothing behind."""
    line = fmt.point_line(1, [0.1, 0.2, 0.3, 0.4], {"s": "a" * 100_000})
    bomb = gzip_stream(iter([header(), *([line] * 2000)]))  # 200 MB inflated
    attempts: list[int] = []
    real = limited.steps()

    @steps.IMPORT_POINTS.fake
    async def import_points(inp: ImportPointsInput) -> Any:  # the step that reads it all
        attempts.append(activity.info().attempt)
        return await real.import_points(inp)

    c, user = limited.client, Factory.user()
    before = await runtime.vectors.collection_names()
    async with limited.worker(import_points):
        # the first operation a worker runs imports every workflow module into its sandbox
        # (tens of MB, whatever the file): measure the second, which reads the same bomb
        warm = await c.post("/sessions/import", **upload(bomb, user))
        assert warm.status_code == 422, warm.text
        with peak_rss() as rss:
            r = await c.post("/sessions/import", **upload(bomb, user))
    assert r.status_code == 422, r.text
    assert "MAX_IMPORT_INFLATED_BYTES" in r.json()["detail"]
    assert r.json()["operation_id"].startswith("import-")
    assert attempts == [1, 1]
    assert rss[1] - rss[0] < 48, rss
    await nothing_created(c, runtime, user, before)


async def test_a_100_mb_line_is_refused_by_default(client: httpx.AsyncClient) -> None:
    huge = fmt.point_line(2, [0.1, 0.2, 0.3, 0.4], {"s": "a" * 100_000_000})
    blob = gzip_stream(iter([header(), POINT, huge]))
    user = Factory.user()
    r = await client.post("/sessions/import", **upload(blob, user))
    assert r.status_code == 422, r.text
    limit = Settings().max_import_line_bytes
    assert f"line 3 is longer than {limit} bytes" in r.json()["detail"]
    assert (await client.get("/sessions", headers={"X-User-Id": user})).json() == []


async def test_upload_past_max_import_bytes_is_413(limited: LimitedStack, runtime: Runtime) -> None:
    blob = os.urandom(UPLOAD_LIMIT + 1)
    c, user = limited.client, Factory.user()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(blob), 65536):
            yield blob[i : i + 65536]

    for content in (blob, chunks()):
        r = await c.post(
            "/sessions/import",
            content=content,
            headers={"content-type": "application/gzip", "X-User-Id": user},
        )
        assert r.status_code == 413, r.text
        assert "MAX_IMPORT_BYTES" in r.json()["detail"]
        assert await staging_files(runtime) == []


async def test_cancelled_validation_stops_its_thread(runtime: Runtime) -> None:
    """A worker shutting down cancels the validation: its reading thread stops too, at
    the next line, instead of reading on (and holding the process) to the end."""
    from temporalio.testing import ActivityEnvironment

    key = f"staging-{uuid.uuid4().hex}.ndjson.gz"
    with runtime.artifacts.open_append(key) as out:
        out.write(gzip_stream(iter([header(), *([POINT * 1000] * 2000)])))
    steps = TransferSteps(runtime.pg, runtime.vectors, runtime.artifacts)
    env = ActivityEnvironment()
    before = set(threading.enumerate())

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.name.startswith("act")]

    try:
        task = asyncio.create_task(env.run(steps.validate_import, key))
        await asyncio.sleep(0.5)
        assert not task.done() and readers()
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if not readers():
                break
            await asyncio.sleep(0.01)
        assert not readers()
    finally:
        runtime.artifacts.delete(key)


# headers the import could not create: 422 before anything starts

BAD_SESSIONS: dict[str, tuple[dict[str, Any], str]] = {
    "metadata a string": ({"name": "h", "metadata": "abc"}, "session.metadata"),
    "configuration a list": ({"name": "h", "configuration": [1]}, "configuration"),
    "tags integers": ({"name": "h", "tags": [1, 2]}, "session.tags.0"),
    "owner_id an object": ({"name": "h", "owner_id": {"x": 1}}, "session.owner_id"),
    "no name": ({"id": "x"}, "session.name"),
    "counter past int64": (
        {"name": "h", "processing_stats": {"urls_processed": 2**63}},
        "session.processing_stats.urls_processed",
    ),
    "negative counter": (
        {"name": "h", "processing_stats": {"clusters_generated": -1}},
        "session.processing_stats.clusters_generated",
    ),
    "model_switches past int32": (
        {"name": "h", "model_usage_history": {"model_switches": 2**31}},
        "session.model_usage_history.model_switches",
    ),
    "metadata over 64 KiB": ({"name": "h", "metadata": {"x": "a" * 70_000}}, "65536"),
    "metadata full before imported_from": (
        {"id": "o", "name": "h", "metadata": {"x": "a" * (65536 - 8)}},
        "imported_from",
    ),
    "name too long": ({"name": "n" * 201}, "session.name"),
    "nested 100 deep": ({"name": "h", "metadata": json.loads("[" * 100 + "]" * 100)}, "nested"),
}


async def import_by(
    c: httpx.AsyncClient, runtime: Runtime, path: str, session: dict[str, Any], user: str
) -> httpx.Response:
    """Import a one-point export holding ``session`` by upload, inline document or id."""
    if path == "document":
        doc = {
            "session": session,
            "export_timestamp": "x",
            "collection_data": {"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}]},
        }
        body = json.dumps(doc).encode()
        return await c.post("/sessions/import", **upload(body, user, "application/json"))
    head = header(session)
    content = head + POINT
    blob = content + fmt.trailer_line(1, hashlib.sha256(content).hexdigest())
    if path == "ndjson":
        return await c.post("/sessions/import", **upload(blob, user, "application/x-ndjson"))
    if path == "gzip":
        return await c.post("/sessions/import", **upload(gzip.compress(blob), user))
    # export_id: a real export whose artifact is replaced by one with this header
    s = await seeded(Factory(c), [1], tag="x", owner=user)
    export = await c.post(f"/sessions/{s['id']}/exports", headers={"X-User-Id": user})
    assert export.status_code == 200, export.text
    export_id = export.json()["export_id"]
    with runtime.artifacts.open_append(f"{export_id}.ndjson.gz", truncate_to=0) as out:
        out.write(gzip.compress(blob))
    await c.delete(f"/sessions/{s['id']}", headers={"X-User-Id": user})
    return await c.post(
        "/sessions/import", json={"export_id": export_id}, headers={"X-User-Id": user}
    )


BAD_HEADER_CASES = [
    *((case, path) for case in BAD_SESSIONS for path in ("gzip", "ndjson", "document")),
    ("metadata a string", "export_id"),
    ("counter past int64", "export_id"),
]


@pytest.mark.parametrize(("case", "path"), BAD_HEADER_CASES, ids="-".join)
async def test_bad_headers_are_422_before_anything_starts(
    client: httpx.AsyncClient, runtime: Runtime, case: str, path: str
) -> None:
    session, words = BAD_SESSIONS[case]
    user = Factory.user()
    before = await runtime.vectors.collection_names()
    r = await import_by(client, runtime, path, session, user)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"], r.json()
    assert "operation_id" not in r.json() and "operation-id" not in r.headers
    if path != "export_id":
        await nothing_created(client, runtime, user, before)
    else:
        assert await staging_files(runtime) == []
        mine = (await client.get("/sessions", headers={"X-User-Id": user})).json()
        assert [s["status"] for s in mine] == ["deleted"]  # the exported one, soft-deleted


async def test_a_good_header_still_imports(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """The same paths with a valid header succeed: the checks refuse only what's wrong."""
    session = {
        "id": "o",
        "name": "h",
        "tags": ["a"],
        "metadata": {"k": [1, {"x": None}]},
        "processing_stats": {"urls_processed": 2**63 - 1, "last_processing_time": None},
        "model_usage_history": {"llm_models_used": ["m"], "model_switches": 3},
        "status": "archived",
        "created_at": "2024-01-01T00:00:00Z",
    }
    for path in ("gzip", "ndjson", "document"):
        r = await import_by(client, runtime, path, session, Factory.user())
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["name"] == "h" and got["tags"] == ["a", "imported"]
        assert got["processing_stats"]["urls_processed"] == 2**63 - 1
        assert got["model_usage_history"]["llm_models_used"] == ["m"]
        assert got["metadata"] == {"k": [1, {"x": None}], "imported_from": "o"}


async def test_deeply_nested_documents_are_422_and_leave_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user = Factory.user()
    before = await runtime.vectors.collection_names()
    for body in (
        b'{"session": {"name": "h", "metadata": ' + b'{"a":' * 1000 + b"1" + b"}" * 1001 + b"}",
        b'{"session": {"name": "h"}, "export_timestamp": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"export_id": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    ):
        r = await client.post("/sessions/import", **upload(body, user, "application/json"))
        assert r.status_code == 422, r.text
    deep = b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"
    point = b'{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4], "payload": ' + deep
    doc = b'{"session": {"name": "h"}, "collection_data": {"points": [' + point + b"}]}}"
    r = await client.post("/sessions/import", **upload(doc, user, "application/json"))
    assert r.status_code == 422 and "nested" in r.json()["detail"], r.text
    deep_head = header({"name": "h", "metadata": "DEEP"}).replace(
        b'"DEEP"', b'{"a":' * 1000 + b"1" + b"}" * 1000
    )
    r = await client.post("/sessions/import", **upload(gzip.compress(deep_head), user))
    assert r.status_code == 422 and "nested" in r.json()["detail"], r.text
    await nothing_created(client, runtime, user, before)


async def test_wrong_sha256_in_a_valid_gzip_is_422(client: httpx.AsyncClient) -> None:
    """Only the trailer's SHA-256 catches this one: the gzip itself is intact."""
    head = header()
    blob = gzip.compress(head + POINT + fmt.trailer_line(1, hashlib.sha256(head).hexdigest()))
    user = Factory.user()
    r = await client.post("/sessions/import", **upload(blob, user))
    assert r.status_code == 422 and "SHA-256" in r.json()["detail"], r.text
    assert (await client.get("/sessions", headers={"X-User-Id": user})).json() == []


# unexpected errors inside workflows end the operation


async def test_unexpected_error_in_a_workflow_fails_the_operation(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """A malformed activity result makes workflow code raise: the operation fails (not its
    workflow task, forever) and the compensations run."""

    @steps.FINISH_IMPORT.fake
    async def finish_import(inp: FinishImportInput) -> Any:
        return {"not": "a session"}

    c, user = ops_stack.client, Factory.user()
    before = await runtime.vectors.collection_names()
    async with ops_stack.worker(finish_import):
        r = await c.post(
            "/sessions/import",
            **upload(artifact([{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}]), user),
            params={"new_name": "x"},
        )
        assert r.status_code in (200, 202, 500), r.text
        op = await ops_stack.wait(r.headers["Operation-Id"], "failed", "succeeded", timeout=30)
    assert op["status"] == "failed" and op["error"]["type"] == "Internal", op
    assert "ValidationError" in op["error"]["message"]
    await nothing_created(c, runtime, user, before)


async def test_unexpected_error_in_a_merge_unlocks_its_sources(ops_stack: OpsStack) -> None:
    c, make = ops_stack.client, ops_stack.make
    a = await seeded(make, [1, 2], tag="a")
    b = await seeded(make, [3], tag="b")

    @steps.FINISH_MERGE.fake
    async def finish_merge(inp: Any) -> Any:
        return [1, 2, 3]

    async with ops_stack.worker(finish_merge):
        r = await c.post(
            "/sessions/merge",
            json={"source_session_ids": [a["id"], b["id"]], "target_name": "m"},
            headers={"Prefer": "respond-async"},
        )
        op = await ops_stack.wait(r.json()["id"], "failed", "succeeded", timeout=30)
    assert op["status"] == "failed" and op["error"]["type"] == "Internal", op
    for s in (a, b):
        assert (await c.put(f"/sessions/{s['id']}", json={"name": "free"})).status_code == 200
    target = op["session_ids"][-1]
    assert (await c.get(f"/sessions/{target}")).status_code == 404


# copy_points retried after its last heartbeat


async def test_copy_retried_after_its_last_heartbeat_does_not_read_again(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make = ops_stack.client, ops_stack.make
    a = await seeded(make, list(range(30)), tag="a")
    b = await seeded(make, list(range(100, 130)), tag="b")
    real = PointSteps(runtime.vectors)
    calls: list[tuple[int, int]] = []

    @steps.COPY_POINTS.fake
    async def copy_points(inp: CopyInput) -> CopyResult:
        got = await real.copy_points(inp)
        calls.append((activity.info().attempt, got.read))
        if got.next_offset is None and len(calls) == 2:  # the first source's last call
            raise RuntimeError("injected after the last heartbeat")
        return got

    async with ops_stack.worker(copy_points):
        r = await c.post(
            "/sessions/merge",
            json={"source_session_ids": [a["id"], b["id"]], "target_name": "m"},
            headers={"Prefer": "respond-async"},
        )
        op = await ops_stack.wait(r.json()["id"], "failed", "succeeded", timeout=60)
    assert op["status"] == "succeeded", op
    assert calls[2] == (2, 10), calls  # the retry read nothing more than the checkpoint
    meta = op["result"]["metadata"]
    assert meta["merged_point_count"] == 60 and meta["merge_collisions"] == 0, meta
    assert op["progress"]["points_done"] == 60, op["progress"]


@pytest.mark.parametrize("case", list(BAD_SESSIONS), ids=list(BAD_SESSIONS))
def test_validation_refuses_bad_headers_too(case: str) -> None:
    """The operation's own validation (an export_id read later, a staging file that
    skipped the API's look) refuses the same headers, as a final 422."""
    head = header(BAD_SESSIONS[case][0])
    blob = head + POINT + fmt.trailer_line(1, hashlib.sha256(head + POINT).hexdigest())
    with pytest.raises(fmt.InvalidArtifact, match=BAD_SESSIONS[case][1].replace(".", r"\.")):
        fmt.validate(io.BytesIO(gzip.compress(blob)))
