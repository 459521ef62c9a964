"""Cold sessions on the embedded stack (Qdrant Edge), killed with SIGKILL in the middle of
an offload and of a reload: after the restart a session is live with every point, or
offloaded with a verified artifact, never neither; and the operation then finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from session_service.domain import export_format as fmt
from tests.test_dev_stack import DevStack, wait_gone
from tests.test_edge_stack import all_points

pytestmark = pytest.mark.e2e

N, DIM = 30_000, 64


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    s = DevStack(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.kill_group(signal.SIGKILL)


def seed(c: httpx.Client) -> tuple[str, str, np.ndarray]:
    vectors = np.random.default_rng(7).standard_normal((N, DIM)).astype(np.float32)
    s = c.post(
        "/sessions", json={"name": "cold", "configuration": {"vector_size": DIM, "distance": "Dot"}}
    ).json()
    for lo in range(0, N, 1000):
        pts = [
            {"id": i, "vector": vectors[i].tolist(), "payload": {"i": i}}
            for i in range(lo, lo + 1000)
        ]
        assert c.put(f"/sessions/{s['id']}/points", json={"points": pts}).status_code == 200
    return s["id"], s["qdrant_collection_name"], vectors


def kill_during(stack: DevStack, c: httpx.Client, op_id: str, phases: set[str]) -> str:
    """SIGKILL the whole stack as soon as the operation reports one of ``phases``."""
    deadline = time.monotonic() + 120
    while True:
        op = c.get(f"/operations/{op_id}").json()
        phase = (op.get("progress") or {}).get("phase", "")
        assert not op["done"], f"finished before the kill: {op}"
        if phase in phases:
            break
        assert time.monotonic() < deadline, op
        time.sleep(0.02)
    procs = stack.tree()
    stack.kill_group(signal.SIGKILL)
    assert wait_gone(procs) == []
    return str(phase)


def either_live_or_verified(stack: DevStack, c: httpx.Client, sid: str, collection: str) -> str:
    """The invariant, read straight from the stores' files and the API's metadata (no
    request here needs the points, so nothing reloads)."""
    session = c.get(f"/sessions/{sid}").json()
    if session["storage"] == "offloaded":
        [row] = [r for r in c.get("/sessions/offloaded").json() if r["session_id"] == sid]
        path = stack.data_dir / "exports" / row["artifact_key"]
        with path.open("rb") as raw:
            header = fmt.validate(raw)
        assert header.points == row["points"] == N and header.sha256 == row["sha256"]
        return "offloaded"
    info = c.get(f"/sessions/{sid}/collection").json()
    assert info["exists"] and info["points_count"] == N, info
    assert (stack.data_dir / "vectors" / collection).is_dir()
    return "live"


def same_points(c: httpx.Client, sid: str, vectors: np.ndarray) -> None:
    got = all_points(c, sid)
    assert sorted(got) == list(range(N))
    for i in (0, 1234, N - 1):
        assert got[i]["payload"] == {"i": i}
        assert np.allclose(np.asarray(got[i]["vector"], dtype=np.float32), vectors[i])


def finish(c: httpx.Client, op_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        op = c.get(f"/operations/{op_id}").json()
        if op["done"]:
            return dict(op)
        assert time.monotonic() < deadline, op
        time.sleep(0.2)


@pytest.mark.parametrize(
    "phases",
    [
        {"writing the artifact"},
        # at whichever of these the poll sees first (the last is past the point of no return)
        {"verifying the artifact", "marking the session offloaded", "dropping the live collection"},
    ],
)
def test_sigkill_mid_offload_leaves_live_or_offloaded_never_neither(
    stack: DevStack, phases: set[str]
) -> None:
    stack.start(OP_HEARTBEAT_TIMEOUT_SECONDS="3")
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        sid, collection, vectors = seed(c)
        r = c.post(f"/sessions/{sid}/offload", headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        kill_during(stack, c, op_id, phases)

    stack.start(OP_HEARTBEAT_TIMEOUT_SECONDS="3")
    with httpx.Client(base_url=stack.url, timeout=120) as c:
        either_live_or_verified(stack, c, sid, collection)
        op = finish(c, op_id)
        assert op["status"] == "succeeded", op
        assert either_live_or_verified(stack, c, sid, collection) == "offloaded"
        assert not (stack.data_dir / "vectors" / collection).exists()
        same_points(c, sid, vectors)  # the first use brings every point back
        assert c.get(f"/sessions/{sid}").json()["storage"] == "live"


def test_sigkill_mid_reload_leaves_live_or_offloaded_never_neither(stack: DevStack) -> None:
    stack.start(OP_HEARTBEAT_TIMEOUT_SECONDS="3")
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        sid, collection, vectors = seed(c)
        r = c.post(f"/sessions/{sid}/offload", headers={"Prefer": "wait=120"})
        assert r.status_code == 200, r.text
        r = c.post(f"/sessions/{sid}/reload", headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        kill_during(stack, c, op_id, {"importing points"})

    stack.start(OP_HEARTBEAT_TIMEOUT_SECONDS="3")
    with httpx.Client(base_url=stack.url, timeout=120) as c:
        assert either_live_or_verified(stack, c, sid, collection) == "offloaded"
        op = finish(c, op_id)
        assert op["status"] == "succeeded", op
        assert either_live_or_verified(stack, c, sid, collection) == "live"
        same_points(c, sid, vectors)
        assert c.get("/sessions/offloaded").json() == []


def cli(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", *args, "--url", stack.url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_offloads_lists_and_reloads(stack: DevStack) -> None:
    stack.start()
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        s = c.post("/sessions", json={"name": "by-cli", "configuration": {"vector_size": 2}}).json()
        pts = [{"id": i, "vector": [1.0, float(i)]} for i in range(7)]
        c.put(f"/sessions/{s['id']}/points", json={"points": pts})
    done = cli(stack, "sessions", "offload", s["id"])
    assert done.returncode == 0, done.stderr
    op = json.loads(done.stdout)
    assert op["kind"] == "offload" and op["result"]["points"] == 7
    listed = json.loads(cli(stack, "sessions", "offloaded").stdout)
    assert [(r["session_id"], r["points"]) for r in listed] == [(s["id"], 7)]
    assert listed[0]["size_bytes"] == op["result"]["size_bytes"] > 0
    human = subprocess.run(
        [
            sys.executable,
            "-m",
            "session_service.cli.main",
            "sessions",
            "offloaded",
            "--url",
            stack.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert s["id"] in human.stdout and "1 offloaded sessions" in human.stdout
    back = cli(stack, "sessions", "reload", s["id"])
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["result"]["storage"] == "live"
    assert json.loads(cli(stack, "sessions", "offloaded").stdout) == []
