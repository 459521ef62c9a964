"""The typed client: retry rules (a transport that fails on purpose), typed errors,
streamed uploads, sync/async parity, and every section of the API against the app."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_service.client import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    PreconditionFailed,
    RetryPolicy,
    ServiceUnavailable,
    SessionClient,
    SyncSessionClient,
    TooManyRequests,
    Unprocessable,
)
from session_service.client.errors import retry_after_seconds
from session_service.domain.models import (
    MergeRequest,
    RetentionPolicy,
    SessionCreate,
    SessionUpdate,
    SplitPartRequest,
    SplitRequest,
    StatsUpdate,
)

# --- retry rules, on a transport that fails on purpose ---------------------------------


class Script:
    """A MockTransport handler answering from a list; records each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        request.read()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # a fresh copy: a response object serves one client flavour once
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.read())


def unavailable(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(503, json={"status": 503, "detail": "down"}, headers=headers)


HEALTHY = httpx.Response(200, json={"status": "healthy"})
OPERATION = {
    "id": "merge-1",
    "kind": "merge",
    "status": "running",
    "done": False,
    "session_ids": ["a", "b"],
    "links": {"self": "/operations/merge-1"},
}


def sync_client(script: Script, waits: list[float], **policy: Any) -> SyncSessionClient:
    return SyncSessionClient(
        "http://x",
        transport=httpx.MockTransport(script),
        retry_policy=RetryPolicy(sleep=waits.append, **policy),
    )


def async_client(script: Script, waits: list[float], **policy: Any) -> SessionClient:
    return SessionClient(
        "http://x",
        transport=httpx.MockTransport(script),
        retry_policy=RetryPolicy(sleep=waits.append, **policy),
    )


def test_retry_after_is_honoured_then_the_answer_returned() -> None:
    script = Script(unavailable("2"), unavailable("7"), HEALTHY)
    waits: list[float] = []
    with sync_client(script, waits) as c:
        assert c.health()["status"] == "healthy"
    assert len(script.requests) == 3 and waits == [2.0, 7.0]


def test_retry_after_is_capped_and_read_as_a_date() -> None:
    script = Script(unavailable("3600"), HEALTHY)
    waits: list[float] = []
    with sync_client(script, waits, max_retry_after=5) as c:
        c.health()
    assert waits == [5]
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after_seconds(when)
    assert seconds is not None and 25 < seconds <= 30
    assert retry_after_seconds("soon") is None


def test_backoff_is_exponential_and_jittered() -> None:
    firsts: set[float] = set()
    for _ in range(10):
        script = Script(unavailable(), unavailable(), unavailable(), HEALTHY)
        waits: list[float] = []
        with sync_client(script, waits, initial=1.0, maximum=3.0) as c:
            c.health()
        assert len(waits) == 3
        for n, w in enumerate(waits):
            assert 0 <= w <= min(1.0 * 2**n, 3.0)
        firsts.add(waits[0])
    assert len(firsts) > 1  # random, so a fleet of callers doesn't retry in step


def test_exhausted_retries_raise_the_typed_error_with_retry_after() -> None:
    script = Script(unavailable("1"))
    waits: list[float] = []
    with sync_client(script, waits, attempts=3) as c, pytest.raises(ServiceUnavailable) as err:
        c.get_session("s")
    assert len(script.requests) == 3 and err.value.retry_after == 1.0
    assert err.value.status == 503 and err.value.detail == "down"


def test_connection_errors_are_retried_then_reported() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), HEALTHY)
    waits: list[float] = []
    with sync_client(script, waits) as c:
        assert c.health()["status"] == "healthy"
    assert len(script.requests) == 3
    script = Script(httpx.ConnectError("refused"))
    with sync_client(script, waits, attempts=2) as c, pytest.raises(ConnectionFailed) as err:
        c.health()
    assert len(script.requests) == 2 and "cannot reach http://x" in str(err.value)


def test_a_post_without_idempotency_key_is_never_retried() -> None:
    for failure in (unavailable("1"), httpx.ConnectError("reset")):
        script = Script(failure, HEALTHY)
        waits: list[float] = []
        with sync_client(script, waits) as c, pytest.raises((ServiceUnavailable, ConnectionFailed)):
            c.archive_session("s")  # a POST that starts nothing and has no key
        assert len(script.requests) == 1 and waits == []
    script = Script(unavailable(), HEALTHY)
    with sync_client(script, []) as c, pytest.raises(ServiceUnavailable):
        c.add_stats("s", StatsUpdate(urls_processed=1))  # counters add up: never blind
    assert len(script.requests) == 1


def test_a_post_with_idempotency_key_is_retried_with_the_same_key() -> None:
    script = Script(unavailable(), httpx.ConnectError("reset"), httpx.Response(202, json=OPERATION))
    waits: list[float] = []
    with sync_client(script, waits) as c:
        outcome = c.merge(MergeRequest(source_session_ids=["a", "b"]), wait=0)
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1 and keys != {""}
    assert not outcome.done and outcome.operation_id == "merge-1"
    assert script.requests[0].headers["Prefer"] == "respond-async"
    given = Script(unavailable(), httpx.Response(202, json=OPERATION))
    with sync_client(given, []) as c:
        c.merge(MergeRequest(source_session_ids=["a", "b"]), idempotency_key="k-1")
    assert [r.headers["Idempotency-Key"] for r in given.requests] == ["k-1", "k-1"]


async def test_the_async_client_follows_the_same_rules() -> None:
    script = Script(unavailable("2"), httpx.ConnectError("refused"), HEALTHY)
    waits: list[float] = []
    async with async_client(script, waits) as c:
        assert (await c.health())["status"] == "healthy"
    assert len(script.requests) == 3 and waits[0] == 2.0
    script = Script(unavailable("1"), HEALTHY)
    async with async_client(script, []) as c:
        with pytest.raises(ServiceUnavailable):
            await c.restore_session("s")
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (404, NotFound),
        (409, Conflict),
        (412, PreconditionFailed),
        (422, Unprocessable),
        (429, TooManyRequests),
    ],
)
def test_errors_are_typed_and_carry_the_problem(status: int, cls: type[ApiError]) -> None:
    problem = {
        "type": f"https://errors.example/{status}",
        "title": "Title",
        "status": status,
        "detail": "what went wrong",
        "operation_id": "merge-9",
    }
    script = Script(httpx.Response(status, json=problem))
    with sync_client(script, [], attempts=1) as c, pytest.raises(cls) as err:
        c.get_session("s")
    e = err.value
    assert isinstance(e, ApiError) and e.status == status and e.problem == problem
    assert (e.type, e.title, e.detail) == (problem["type"], "Title", "what went wrong")
    assert str(e) == f"{status}: what went wrong"


def test_a_non_json_error_answer_still_raises_the_typed_error() -> None:
    script = Script(httpx.Response(404, text="<html>gateway</html>"))
    with sync_client(script, []) as c, pytest.raises(NotFound) as err:
        c.get_export("e")
    assert err.value.detail == "<html>gateway</html>"


def test_pages_are_followed_through_link_headers() -> None:
    pages = {
        None: ([{"export_id": "a"}], '</exports?limit=1&page_token=t2>; rel="next"'),
        "t2": ([{"export_id": "b"}], None),
    }
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("page_token")
        seen.append(token)
        body, link = pages[token]
        return httpx.Response(200, json=body, headers={"Link": link} if link else {})

    with SyncSessionClient("http://x", transport=httpx.MockTransport(handler)) as c:
        assert [e["export_id"] for e in c.iter_exports(limit=1)] == ["a", "b"]
    assert seen == [None, "t2"]


class Draining(httpx.BaseTransport):
    """Reads the request body chunk by chunk and keeps only its length."""

    def __init__(self) -> None:
        self.size = 0
        self.chunks = 0
        self.headers: httpx.Headers | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = request.headers
        for chunk in request.stream:  # type: ignore[union-attr]
            self.size += len(chunk)
            self.chunks += 1
        return httpx.Response(202, json=OPERATION)


def test_an_upload_streams_from_the_file(tmp_path: Path) -> None:
    artifact = tmp_path / "big.ndjson.gz"
    size = 24 * 1024 * 1024
    with artifact.open("wb") as f:
        f.write(b"\x1f\x8b")
        for _ in range(size // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    transport = Draining()
    with SyncSessionClient("http://x", transport=transport) as c:
        tracemalloc.start()
        c.import_file(artifact, new_name="copy", wait=0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert transport.size == artifact.stat().st_size and transport.chunks > 1
    assert transport.headers is not None
    assert transport.headers["Content-Type"] == "application/gzip"
    assert transport.headers["Content-Length"] == str(artifact.stat().st_size)
    assert peak < 4 * 1024 * 1024, f"upload held {peak} bytes for a {size}-byte file"


def public_methods(cls: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in ("close",)
    }


def test_the_sync_and_async_clients_offer_the_same_calls() -> None:
    sync, aio = public_methods(SyncSessionClient), public_methods(SessionClient)
    assert sync == aio
    for name in ("share", "unshare", "record_model_usage", "get_points", "delete_points"):
        assert name in sync
    for name in ("compare", "archive_session", "restore_session", "set_retention_policy"):
        assert name in sync
    for name in ("iter_sessions", "iter_operations", "iter_exports", "download_export"):
        assert name in sync


# --- the whole API, against the app (async) ----------------------------------------------


@pytest.fixture
def api(client: httpx.AsyncClient) -> SessionClient:
    return SessionClient("http://test", transport=client._transport)


def vec(n: int) -> list[float]:
    return [1.0, float(n)]


@pytest.mark.usefixtures("worker")
async def test_the_client_covers_every_section_of_the_api(
    api: SessionClient, tmp_path: Path
) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    config: Any = {"vector_size": 2}
    a = await api.create_session(SessionCreate(name="a", owner_id=owner, configuration=config))
    b = await api.create_session(SessionCreate(name="b", owner_id=owner, configuration=config))
    # A: CRUD, conditional update, share, stats, model usage, compare, archive/restore
    assert (await api.get_session(a.id)).name == "a"
    with pytest.raises(PreconditionFailed):
        await api.update_session(a.id, SessionUpdate(name="x"), if_match='"999"')
    assert (await api.update_session(a.id, SessionUpdate(name="a2"), if_match='"1"')).name == "a2"
    shared = await api.share(a.id, ["u1"], ["read"])
    assert shared.shared_with == ["u1"] and shared.status.value == "shared"
    assert (await api.collaborators(a.id)).permissions["u1"] == ["read"]
    assert "message" in await api.unshare(a.id, "u1")
    await api.add_stats(a.id, StatsUpdate(urls_processed=3))
    await api.record_model_usage(a.id, "llm", "m1")
    stats = await api.stats(a.id)
    assert stats["session_stats"]["urls_processed"] == 3
    assert stats["model_usage"]["llm_models_used"] == ["m1"]
    with pytest.raises(BadRequest):
        await api.record_model_usage(a.id, "vision", "m2")
    compared = await api.compare([a.id, b.id])
    assert compared["comparison_summary"]["total_sessions"] == 2
    await api.archive_session(b.id)
    assert (await api.get_session(b.id)).status.value == "archived"
    await api.restore_session(b.id)
    listed = [s.id async for s in api.iter_sessions(owner_id=owner, limit=1)]
    assert sorted(listed) == sorted([a.id, b.id])  # two pages of one
    policy = await api.retention_policy()
    current = RetentionPolicy.model_validate(policy["retention_policy"])
    assert (await api.set_retention_policy(current))["new_policy"] == policy["retention_policy"]
    # C: points
    assert await api.upsert_points(a.id, [{"id": i, "vector": vec(i)} for i in range(1, 6)]) == 5
    await api.upsert_points(b.id, [{"id": 9, "vector": vec(9)}])
    page = await api.get_points(a.id, limit=2, with_vectors=True)
    assert len(page.points) == 2 and page.next_offset is not None
    assert sorted([p.id async for p in api.iter_points(a.id, page_size=2)]) == [1, 2, 3, 4, 5]
    assert await api.delete_points(a.id, [5]) == 1
    hits = await api.query_points(a.id, vec(4), limit=2)
    assert len(hits) == 2 and {"id", "score"} <= set(hits[0])
    assert (await api.collection(a.id)).points_count == 4
    with pytest.raises(Unprocessable):
        await api.upsert_points(a.id, [{"id": 7, "vector": [1.0]}])
    # D: exports, download, import by upload (streamed) and by id
    exported = await api.export(a.id, wait=30)
    assert exported.done and exported.result["points"] == 4
    export_id = exported.result["export_id"]
    assert export_id in [e["export_id"] async for e in api.iter_exports(session_id=a.id)]
    assert (await api.get_export(export_id))["points"] == 4
    artifact = tmp_path / "a.ndjson.gz"
    size = await api.download_export(export_id, artifact)
    assert size == artifact.stat().st_size and gzip.decompress(artifact.read_bytes())
    uploaded = await api.import_file(artifact, new_name="from-file", wait=0)
    op = await api.wait(uploaded.operation_id, poll=0.05)
    assert op.status.value == "succeeded" and op.result["name"] == "from-file"
    by_id = await api.import_export(export_id, new_name="from-id", wait=30)
    assert by_id.done and by_id.result["name"] == "from-id"
    document = tmp_path / "a.json"
    await api.export_document(a.id, document)
    doc = json.loads(document.read_text())
    assert doc["collection_data"]["exported_points"] == 4
    assert (await api.import_document(doc, new_name="from-doc", wait=30)).done
    await api.delete_export(export_id)
    with pytest.raises(NotFound):
        await api.get_export(export_id)
    # A/B: merge, split, operations
    merged = await api.merge(MergeRequest(source_session_ids=[a.id, b.id], archive_sources=False))
    assert merged.done and merged.result["metadata"]["merged_point_count"] == 5
    op = await api.get_operation(merged.operation_id)
    assert op.kind == "merge" and op.status.value == "succeeded"
    with pytest.raises(Conflict):
        await api.cancel_operation(op.id)  # finished
    ops = [o.id async for o in api.iter_operations(session_id=a.id, kind="merge")]
    assert ops == [op.id]
    assert [o.id for o in await api.list_operations(session_id=a.id, limit=1)] != []
    split = await api.split(
        merged.result["id"],
        SplitRequest(parts=[SplitPartRequest(name="part", point_ids=[1, 2])]),
        wait=30,
    )
    assert split.done and split.result["assigned_points"] == 2
    # G: offload and reload
    off = await api.offload(a.id, wait=30)
    assert off.done
    assert a.id in {r["session_id"] for r in await api.offloaded(limit=1000)}
    assert (await api.reload(a.id, wait=30)).done
    assert (await api.collection(a.id)).points_count == 4
    # A: soft and permanent delete
    soft = await api.delete_session(b.id)
    assert soft.done and soft.result["permanent"] is False
    gone = await api.delete_session(b.id, permanent=True, wait=30)
    assert gone.done and gone.result["permanent"] is True
    with pytest.raises(NotFound):
        await api.get_session(b.id)
    await api.close()
