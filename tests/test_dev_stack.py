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

from session_service.cli.embedded_stack import free_port

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

    def start(self, timeout: float = 90, **env_extra: str) -> float:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "SESSION_API_KEYS")
        }
        env.update(env_extra)
        started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "session_service.cli.main",
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


def test_restart_right_after_a_sigkill_of_the_group_waits_for_the_old_cluster(
    stack: DevStack,
) -> None:
    """Postgres backends run in process groups of their own and outlive a group kill for a
    moment; a start at once (as a supervisor would) waits for them instead of failing."""
    stack.start()
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        made = c.post("/sessions", json={"name": "kept", "configuration": {"vector_size": 4}})
        assert made.status_code == 200
    stack.kill_group(signal.SIGKILL)
    stack.start()
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        assert c.get(f"/sessions/{made.json()['id']}").json()["name"] == "kept"


def test_sigterm_stops_everything_in_order(stack: DevStack) -> None:
    stack.start()
    procs = stack.tree()
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(60) == 0
    assert wait_gone(procs, timeout=10) == []
    assert "stopped" in stack.log.read_text()
    assert not (stack.data_dir / "postgres" / "postmaster.pid").exists()


def test_whole_stack_killed_mid_merge_finishes_exactly_after_restart(stack: DevStack) -> None:
    fast_retry = {"OP_HEARTBEAT_TIMEOUT_SECONDS": "5", "OP_BATCHES_PER_CALL": "2"}
    stack.start(**fast_retry)
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        ids = []
        for lo in (0, 10_000):  # 20,000 points each, 10,000 shared
            s = c.post(
                "/sessions", json={"name": f"src-{lo}", "configuration": {"vector_size": 8}}
            ).json()
            ids.append(s["id"])
            for start in range(lo, lo + 20_000, 1000):
                pts = [
                    {"id": i, "vector": [float(i % 13)] * 8, "payload": {"src": lo}}
                    for i in range(start, start + 1000)
                ]
                assert c.put(f"/sessions/{s['id']}/points", json={"points": pts}).status_code == 200
        r = c.post(
            "/sessions/merge", json={"source_session_ids": ids}, headers={"Prefer": "respond-async"}
        )
        assert r.status_code == 202
        op_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            progress = c.get(f"/operations/{op_id}").json()["progress"]
            if progress["points_done"] >= 2048:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.05)
    assert progress["points_done"] < 40_000, "merge finished before the kill: make it bigger"
    procs = stack.tree()
    stack.kill_group(signal.SIGKILL)
    assert wait_gone(procs) == []

    stack.start(**fast_retry)
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        deadline = time.monotonic() + 240
        while (op := c.get(f"/operations/{op_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, op
            time.sleep(0.5)
        assert op["status"] == "succeeded", op
        merged = op["result"]
        assert merged["metadata"]["merged_point_count"] == 30_000
        assert merged["metadata"]["merge_collisions"] == 10_000
        seen: list[int] = []
        offset = None
        while True:
            params: dict[str, object] = {"limit": 1000}
            if offset is not None:
                params["offset"] = offset
            page = c.get(f"/sessions/{merged['id']}/points", params=params).json()
            seen += [p["id"] for p in page["points"]]
            offset = page["next_offset"]
            if offset is None:
                break
        assert sorted(seen) == list(range(30_000))  # no duplicate, no missing point
        for sid in ids:
            src = c.get(f"/sessions/{sid}").json()
            assert src["status"] == "archived"
            assert c.get(f"/sessions/{sid}/collection").json()["points_count"] == 20_000


def test_a_failed_temporal_start_says_why(tmp_path: Path) -> None:
    """Its port taken, the dev server exits; the error shows its error line (not just the
    tail of a goroutine dump) and where the whole log is."""
    import socket

    from session_service.cli.embedded_stack import EmbeddedTemporal

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        temporal = EmbeddedTemporal(tmp_path, port=port, ui_port=free_port())
        try:
            with pytest.raises(RuntimeError) as failed:
                temporal.start(timeout=60)
        finally:
            temporal.stop()
    message = str(failed.value)
    assert "temporal" in message and "address already in use" in message
    assert f"(full log: {tmp_path / 'temporal.log'})" in message
