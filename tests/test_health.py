"""Probes: /health/live answers while the process serves; /health/ready only when the
stores answer and a worker polls the task queue, else 503 naming what failed, quickly."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from session_service.api.app import create_app
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal.worker import worker_of


class Probed:
    """An app of its own (an ``api`` process) on a task queue no worker polls yet."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client


@pytest.fixture
async def probed(settings: Settings, runtime: Runtime) -> AsyncIterator[Probed]:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"probe-{uuid.uuid4().hex[:8]}",
            "session_api_keys": "probe-key-number-one",
        }
    )
    rt = Runtime(
        settings=own, pool=runtime.pool, vectors=runtime.vectors, temporal=runtime.temporal
    )
    transport = httpx.ASGITransport(app=create_app(own, rt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield Probed(rt, c)


async def test_ready_is_503_until_a_worker_polls_then_200(probed: Probed) -> None:
    c = probed.client
    queue = probed.runtime.settings.temporal_task_queue
    live = await c.get("/health/live")  # no API key: probes are open
    assert live.status_code == 200 and live.json()["status"] == "alive"

    r = await c.get("/health/ready")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    body = r.json()
    assert body["status"] == 503 and body["title"] == "Service Unavailable"
    assert body["failed"] == ["workers"]
    assert queue in body["detail"] and "workers" in body["detail"]
    assert body["checks"]["postgres"] == body["checks"]["temporal"] == "ok"
    assert body["checks"]["vectors"] == "ok"
    # the old deep check doesn't look at workers: its callers see no change
    assert (await c.get("/health")).status_code == 200

    async with worker_of(probed.runtime):
        for _ in range(300):
            r = await c.get("/health/ready")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {
            "postgres": "ok",
            "temporal": "ok",
            "vectors": "ok",
            "workers": "ok",
        }
        assert r.json()["status"] == "ready"


async def test_a_hung_dependency_makes_ready_503_not_a_hung_probe(
    probed: Probed, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(probed.runtime.vectors, "ping", hangs)
    r = await asyncio.wait_for(probed.client.get("/health/ready"), 60)
    assert r.status_code == 503
    assert r.json()["failed"] == ["vectors", "workers"]
    assert "no answer within" in r.json()["checks"]["vectors"]
    live = await asyncio.wait_for(probed.client.get("/health/live"), 60)
    assert live.status_code == 200


async def test_probes_write_no_access_log(probed: Probed, caplog: Any) -> None:
    with caplog.at_level(logging.DEBUG, logger="session_service.http"):
        for path in ("/health/live", "/health/ready", "/health"):
            await probed.client.get(path)
        await probed.client.get("/sessions")  # 401 without the key: logged
    logged = [r.getMessage() for r in caplog.records if r.name == "session_service.http"]
    assert len(logged) == 1 and "/sessions" in logged[0], logged


async def test_concurrent_probes_share_one_run_of_the_checks(
    probed: Probed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes are open to anyone: a burst of them costs the backends one run of checks."""
    real = probed.runtime.vectors.ping
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        await real()

    monkeypatch.setattr(probed.runtime.vectors, "ping", counted)
    answers = await asyncio.gather(*(probed.client.get("/health/ready") for _ in range(50)))
    assert {a.status_code for a in answers} == {503}  # no worker polls this queue
    assert calls == 1
    await asyncio.sleep(1.1)  # past the reuse window, a probe checks again
    await probed.client.get("/health/ready")
    assert calls == 2
