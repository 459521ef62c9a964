"""`session-service dev` end to end: a real process tree, killed with SIGKILL and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from session_service.embedded import free_port

pytestmark = pytest.mark.e2e


class DevStack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"dev-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> float:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "SESSION_API_KEYS")
        }
        started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "session_service.cli",
                    "dev",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--temporal-port",
                    str(free_port()),
                    "--temporal-ui-port",
                    str(free_port()),
                ],
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("dev stack not healthy in time:\n" + self.log.read_text()[-3000:])

    def tree(self) -> list[psutil.Process]:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def kill_group(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        self.proc.wait(60)


def wait_gone(procs: list[psutil.Process], timeout: float = 20) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    s = DevStack(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)


def test_sigkill_of_the_group_leaves_nothing_and_restart_keeps_data(stack: DevStack) -> None:
    stack.start()
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        health = c.get("/health").json()
        assert health["checks"] == {"postgres": "ok", "temporal": "ok", "qdrant": "ok"}
        made = []
        for i in range(3):
            r = c.post("/sessions", json={"name": f"kept-{i}", "configuration": {"vector_size": 4}})
            assert r.status_code == 200
            made.append(r.json())
            pts = [
                {"id": n, "vector": [1.0, 2.0, 3.0, float(n)], "payload": {"n": n}}
                for n in range(50)
            ]
            assert (
                c.put(f"/sessions/{r.json()['id']}/points", json={"points": pts}).status_code == 200
            )
            assert (
                c.put(
                    f"/sessions/{r.json()['id']}/stats", json={"urls_processed": i + 1}
                ).status_code
                == 200
            )

    first_run = stack.tree()
    names = " ".join(" ".join(p.cmdline()) for p in first_run)
    assert "postgres" in names and "temporal" in names
    stack.kill_group(signal.SIGKILL)
    alive = wait_gone(first_run)
    assert alive == [], f"stray processes of the killed run: {alive}"

    stack.start()
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        for i, s in enumerate(made):
            got = c.get(f"/sessions/{s['id']}")
            assert got.status_code == 200
            assert got.json()["name"] == f"kept-{i}"
            assert got.json()["processing_stats"]["urls_processed"] == i + 1
            col = c.get(f"/sessions/{s['id']}/collection").json()
            assert col["exists"] and col["points_count"] == 50


def test_sigterm_stops_everything_in_order(stack: DevStack) -> None:
    stack.start()
    procs = stack.tree()
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(60) == 0
    assert wait_gone(procs, timeout=10) == []
    assert "stopped" in stack.log.read_text()
    assert not (stack.data_dir / "postgres" / "postmaster.pid").exists()
