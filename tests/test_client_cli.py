"""The typed client and the operator CLI drive operations to the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from session_service.client import ApiError, SessionClient
from session_service.domain.models import MergeRequest, SessionCreate, SessionUpdate
from tests.test_dev_stack import DevStack


@pytest.fixture
def client_for(client: httpx.AsyncClient) -> SessionClient:
    transport = client._transport  # the test app, in process
    return SessionClient("http://test", transport=transport)


@pytest.mark.usefixtures("worker")
async def test_client_follows_the_operation_contract(client_for: SessionClient) -> None:
    owner = f"owner-{os.urandom(4).hex()}"
    made = []
    for i in range(3):
        s = await client_for.create_session(
            SessionCreate(name=f"c{i}", owner_id=owner, configuration={"vector_size": 2})  # type: ignore[arg-type]
        )
        await client_for.upsert_points(s.id, [{"id": i, "vector": [1.0, 2.0]}])
        made.append(s)
    listed = [s.id async for s in client_for.list_sessions(owner_id=owner, limit=1)]
    assert sorted(listed) == sorted(s.id for s in made)  # followed Link across 3 pages
    renamed = await client_for.update_session(made[0].id, SessionUpdate(name="renamed"))
    assert renamed.name == "renamed"

    outcome = await client_for.merge(
        MergeRequest(source_session_ids=[made[0].id, made[1].id]), wait=0
    )
    assert not outcome.done and outcome.operation is not None
    seen = []
    op = await client_for.wait(outcome.operation_id, poll=0.05, on_progress=seen.append)
    assert op.status.value == "succeeded" and seen[-1].done
    assert op.result["metadata"]["merged_point_count"] == 2
    await client_for.close()


async def test_client_errors_and_retries() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "starting"})
        if request.url.path == "/sessions/missing":
            return httpx.Response(404, json={"status": 404, "detail": "session missing not found"})
        return httpx.Response(200, json={"status": "healthy"})

    async with SessionClient("http://x", transport=httpx.MockTransport(flaky)) as c:
        assert (await c.health())["status"] == "healthy"
        assert calls == ["GET"] * 3  # two 503s retried
        with pytest.raises(ApiError) as err:
            await c.get_session("missing")
        assert err.value.status == 404 and "not found" in str(err.value)
        calls.clear()

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Idempotency-Key", ""))
        return httpx.Response(503, json={"detail": "down"})

    async with SessionClient(
        "http://x", transport=httpx.MockTransport(unavailable), retries=2
    ) as c:
        with pytest.raises(ApiError):
            await c.merge(MergeRequest(source_session_ids=["a", "b"]))
    assert len(calls) == 3 and len(set(calls)) == 1 and calls[0]  # same key on every retry


async def test_merge_source_validation_reaches_the_client(client_for: SessionClient) -> None:
    with pytest.raises(ApiError) as err:
        await client_for.merge(MergeRequest(source_session_ids=["x", "x"]))
    assert err.value.status == 400  # fewer than two sessions (API.md F)
    await client_for.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    import signal

    s = DevStack(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)


def cli(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", *args, "--url", stack.url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_cli_drives_a_merge_on_the_embedded_stack(stack: DevStack) -> None:
    stack.start()
    ids = []
    with httpx.Client(base_url=stack.url) as c:
        for name in ("left", "right"):
            s = c.post("/sessions", json={"name": name, "configuration": {"vector_size": 2}}).json()
            pts = [{"id": i, "vector": [1.0, float(i)]} for i in range(5)]
            c.put(f"/sessions/{s['id']}/points", json={"points": pts})
            ids.append(s["id"])
    merged = cli(stack, "sessions", "merge", *ids, "--name", "Both")
    assert merged.returncode == 0, merged.stderr
    op = json.loads(merged.stdout)
    assert op["status"] == "succeeded" and op["result"]["name"] == "Both"
    shown = json.loads(cli(stack, "ops", "show", op["id"]).stdout)
    assert shown["id"] == op["id"] and shown["kind"] == "merge"
    listed = json.loads(cli(stack, "ops", "list", "--session", ids[0]).stdout)
    assert [o["id"] for o in listed] == [op["id"]]
    sessions = json.loads(cli(stack, "sessions", "list").stdout)
    assert {s["name"] for s in sessions} == {"left", "right", "Both"}
    assert {s["status"] for s in sessions if s["name"] != "Both"} == {"archived"}
    exported = cli(stack, "sessions", "export", op["result"]["id"])
    assert exported.returncode == 0 and json.loads(exported.stdout)["result"]["points"] == 5
    missing = cli(stack, "sessions", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and json.loads(missing.stdout)["status"] == 404
