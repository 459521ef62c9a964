"""Which process may hold the vectors: ``api`` and ``worker`` need a shared Qdrant server;
``serve`` (one node) and ``dev`` run API and worker in one process on Qdrant Edge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from session_service.cli.embedded_stack import free_port
from session_service.settings import Settings


def env(**extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST")
    }
    return {**base, **extra}


@pytest.mark.parametrize("command", ["api", "worker"])
def test_api_and_worker_refuse_to_start_without_a_shared_engine(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", command],
        env=env(DATABASE_URL="postgresql://x@127.0.0.1:1/x", TEMPORAL_ADDRESS="127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "QDRANT_URL is not set" in done.stderr and "session-service serve" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_runs_api_and_worker_on_edge(settings: Settings, tmp_path: Path) -> None:
    """One node against external Postgres and Temporal: points, a query and a merge (which
    needs the worker in the same process) on Edge shards under DATA_DIR."""
    port = free_port()
    log = tmp_path / "serve.log"
    assert settings.database_url and settings.temporal_address
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "session_service.cli.main", "serve", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env=env(
                DATABASE_URL=settings.database_url,
                TEMPORAL_ADDRESS=settings.temporal_address,
                TEMPORAL_TASK_QUEUE=f"serve-{port}",
                RETENTION_SCHEDULE_ID=f"serve-{port}",
                DATA_DIR=str(tmp_path / "data"),
            ),
            stdout=out,
            stderr=out,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as c:
            ids = []
            for n in range(2):
                sid = c.post(
                    "/sessions", json={"name": f"n{n}", "configuration": {"vector_size": 3}}
                ).json()["id"]
                pts = [{"id": i + n, "vector": [1.0, float(i), 0.0]} for i in range(10)]
                assert c.put(f"/sessions/{sid}/points", json={"points": pts}).status_code == 200
                ids.append(sid)
            merged = c.post("/sessions/merge", json={"source_session_ids": ids})
            assert merged.status_code == 200, merged.text
            target = merged.json()
            assert target["metadata"]["merged_point_count"] == 11
            found = c.post(
                f"/sessions/{target['id']}/points/query", json={"vector": [1.0, 9.0, 0.0]}
            ).json()["points"]
            assert [p["id"] for p in found[:2]] == [10, 9]
        shard = tmp_path / "data" / "vectors" / target["qdrant_collection_name"]
        assert (shard / "edge_config.json").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def one_line_failure(command: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", command],
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"session-service {command}: "), done.stderr
    return lines[0]


def test_an_unreachable_postgres_is_one_line_without_the_password(settings: Settings) -> None:
    assert settings.temporal_address
    line = one_line_failure(
        "worker",
        DATABASE_URL="postgresql://app:s3cret-pw@127.0.0.1:1/sessions",
        TEMPORAL_ADDRESS=settings.temporal_address,
        QDRANT_URL="http://127.0.0.1:1",
    )
    assert "cannot connect to Postgres at 127.0.0.1:1/sessions" in line
    assert "check DATABASE_URL" in line and "s3cret-pw" not in line


def test_an_unreachable_qdrant_is_one_line(settings: Settings) -> None:
    """A worker that can't reach its vectors would take activities only to fail them."""
    assert settings.database_url and settings.temporal_address
    line = one_line_failure(
        "worker",
        DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=settings.temporal_address,
        QDRANT_URL="http://127.0.0.1:1",
    )
    assert "cannot reach Qdrant at http://127.0.0.1:1" in line
    assert "check QDRANT_URL and QDRANT_API_KEY" in line


def test_a_namespace_that_does_not_exist_is_one_line(settings: Settings, tmp_path: Path) -> None:
    """The server answers the connection's own call without checking the namespace or the
    credentials: the first call scoped to the namespace does, at start."""
    assert settings.database_url and settings.temporal_address
    line = one_line_failure(
        "serve",
        DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=settings.temporal_address,
        TEMPORAL_NAMESPACE="no-such-namespace",
        DATA_DIR=str(tmp_path),
    )
    assert line == (
        f"session-service serve: temporal at {settings.temporal_address}: namespace "
        "'no-such-namespace' does not exist: check TEMPORAL_NAMESPACE"
    )
