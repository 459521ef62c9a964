"""The embedded stack on Qdrant Edge, end to end: what a SIGKILL keeps, and the search index
that follows a bulk write without holding its answer."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.test_dev_stack import DevStack, wait_gone

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    s = DevStack(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.kill_group(signal.SIGKILL)


def all_points(c: httpx.Client, sid: str) -> dict[int, dict[str, object]]:
    out: dict[int, dict[str, object]] = {}
    offset = None
    while True:
        params: dict[str, object] = {"limit": 1000, "with_vectors": True}
        if offset is not None:
            params["offset"] = offset
        page = c.get(f"/sessions/{sid}/points", params=params).json()
        out |= {p["id"]: p for p in page["points"]}
        offset = page["next_offset"]
        if offset is None:
            return out


def test_acknowledged_points_survive_a_sigkill_of_the_whole_stack(stack: DevStack) -> None:
    """No flush, no shutdown: every point a 200 acknowledged is there after the restart,
    with its vector and payload (Edge replays its write-ahead log)."""
    stack.start()
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((6000, 16)).astype(np.float32)
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        sid = c.post(
            "/sessions",
            json={"name": "kept", "configuration": {"vector_size": 16, "distance": "Dot"}},
        ).json()["id"]
        for lo in range(0, 6000, 1000):
            pts = [
                {"id": i, "vector": vectors[i].tolist(), "payload": {"i": i, "tag": f"t{i % 5}"}}
                for i in range(lo, lo + 1000)
            ]
            assert c.put(f"/sessions/{sid}/points", json={"points": pts}).status_code == 200
        assert c.post(f"/sessions/{sid}/points/delete", json={"ids": [0, 1, 2]}).json() == {
            "deleted": 3
        }
    procs = stack.tree()
    stack.kill_group(signal.SIGKILL)
    assert wait_gone(procs) == []

    stack.start()
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        got = all_points(c, sid)
        assert sorted(got) == list(range(3, 6000))
        for i in (3, 999, 1000, 5999):
            assert got[i]["payload"] == {"i": i, "tag": f"t{i % 5}"}
            assert np.array_equal(np.asarray(got[i]["vector"], dtype=np.float32), vectors[i])
        assert c.get(f"/sessions/{sid}/collection").json()["points_count"] == 5997


def test_merge_answers_first_and_the_index_follows(stack: DevStack) -> None:
    """The merge's answer doesn't wait for the HNSW build; queries answer throughout; the
    index is reported on its own (log line and the index-<operation> workflow)."""
    stack.start(VECTOR_INDEX_MIN_POINTS="2000")
    rng = np.random.default_rng(2)
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        ids = []
        for lo in (0, 3000):
            sid = c.post(
                "/sessions", json={"name": f"m{lo}", "configuration": {"vector_size": 32}}
            ).json()["id"]
            ids.append(sid)
            for start in range(lo, lo + 3000, 1000):
                pts = [
                    {"id": i, "vector": rng.standard_normal(32).tolist(), "payload": {"i": i}}
                    for i in range(start, start + 1000)
                ]
                assert c.put(f"/sessions/{sid}/points", json={"points": pts}).status_code == 200
        r = c.post("/sessions/merge", json={"source_session_ids": ids, "archive_sources": False})
        assert r.status_code == 200, r.text
        merged = r.json()
        op_id = r.headers["Operation-Id"]
        q = {"vector": rng.standard_normal(32).tolist(), "limit": 5}
        url = f"/sessions/{merged['id']}/points/query"
        first = c.post(url, json=q).json()["points"]
        assert len(first) == 5
        deadline = time.monotonic() + 120
        while "search index built" not in stack.log.read_text():
            assert c.post(url, json=q).json()["points"] == first
            assert time.monotonic() < deadline, stack.log.read_text()[-3000:]
            time.sleep(0.2)
        log = stack.log.read_text()
        assert merged["qdrant_collection_name"] in log and f"index-{op_id}" in log
        assert c.post(url, json=q).json()["points"][0]["id"] == first[0]["id"]
        assert c.get(f"/sessions/{merged['id']}/collection").json()["points_count"] == 6000
