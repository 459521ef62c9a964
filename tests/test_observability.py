"""/metrics moves with requests and operations; logs carry request and operation ids."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from session_service import logs
from tests.conftest import Factory
from tests.test_dev_stack import DevStack
from tests.test_operations import seeded

pytestmark = pytest.mark.usefixtures("worker")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_operations_and_points(
    client: httpx.AsyncClient, make: Factory
) -> None:
    before = (await client.get("/metrics")).text
    a = await seeded(make, list(range(30)), tag="a")
    b = await seeded(make, list(range(30, 50)), tag="b")
    await client.get(f"/sessions/{a['id']}")
    await client.get("/sessions/00000000-0000-4000-8000-000000000000")
    r = await client.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
    assert r.status_code == 200
    after = await client.get("/metrics")
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    text = after.text

    def moved(name: str, **labels: str) -> float:
        return sample(text, name, **labels) - sample(before, name, **labels)

    route = "/sessions/{session_id}"
    assert (
        moved("session_service_http_requests_total", method="GET", route=route, status="200") == 1
    )
    assert (
        moved("session_service_http_requests_total", method="GET", route=route, status="404") == 1
    )
    assert (
        moved("session_service_http_request_duration_seconds_count", method="GET", route=route) == 2
    )
    assert moved("session_service_operations_started_total", kind="merge") == 1
    assert moved("session_service_operations_finished_total", kind="merge", status="succeeded") == 1
    assert (
        moved("session_service_operation_duration_seconds_count", kind="merge", status="succeeded")
        == 1
    )
    assert moved("session_service_points_moved_total", activity_type="copy_points") == 50
    # one label per concept: the SDK's activity_type names the step; no copy of it
    assert "step=" not in text
    # operation durations reach hours: a long merge lands in a bucket, not in +Inf
    buckets = re.findall(
        r'session_service_operation_duration_seconds_bucket\{[^}]*le="([^"]+)"', text
    )
    assert {"0.01", "10", "60", "3600", "21600", "+Inf"} <= set(buckets)
    assert "temporal_worker_task_slots_available" in text  # the SDK's own worker metrics
    assert "session_id=" not in text  # no session ids as labels


async def test_a_split_counts_each_moved_point_once_and_its_removal_apart(
    client: httpx.AsyncClient, make: Factory
) -> None:
    """Summing points_moved_total over every activity type gives the points moved:
    the removal from the source is counted in points_removed_total, not again."""
    before = (await client.get("/metrics")).text
    src = await seeded(make, list(range(30)), tag="s")
    r = await client.post(
        f"/sessions/{src['id']}/split",
        json={"parts": [{"name": "p", "point_ids": list(range(10, 30))}]},
    )
    assert r.status_code == 200, r.text
    text = (await client.get("/metrics")).text

    def moved(name: str, **labels: str) -> float:
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert moved("session_service_points_moved_total", activity_type="copy_points_by_id") == 20
    assert moved("session_service_points_moved_total", activity_type="remove_points") == 0
    assert moved("session_service_points_removed_total", activity_type="remove_points") == 20


async def test_request_id_is_honoured_returned_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = await client.get("/sessions", headers={"X-Request-Id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    made = (await client.get("/sessions")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    lines = [rec.msg for rec in caplog.records if rec.name == "session_service.http"]
    assert any(isinstance(m, dict) and m.get("request_id") == "req-42" for m in lines)


async def test_operation_logs_carry_operation_and_session_ids(
    client: httpx.AsyncClient, make: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(json_logs=True)
    try:
        a = await seeded(make, [1], tag="a")
        b = await seeded(make, [2], tag="b")
        r = await client.post(
            "/sessions/merge",
            json={"source_session_ids": [a["id"], b["id"]]},
            headers={"X-Request-Id": "merge-req"},
        )
        op_id = r.headers["Operation-Id"]
    finally:
        out = capsys.readouterr().out
        logs.configure(json_logs=False)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    started = [e for e in events if e.get("event") == "operation started"]
    assert started and started[0]["operation_id"] == op_id
    assert started[0]["request_id"] == "merge-req"
    assert a["id"] in started[0]["session_ids"]
    request = [
        e for e in events if e.get("event") == "request" and e.get("path") == "/sessions/merge"
    ]
    assert request and request[0]["status"] == 200 and request[0]["request_id"] == "merge-req"


async def test_routine_counter_writes_log_at_debug_and_failures_at_info(
    client: httpx.AsyncClient, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """The processing services send stats by the thousand: a fast 200 is a DEBUG line,
    while a refused one is still an INFO line an operator sees."""
    s = await make.session()
    caplog.set_level(logging.INFO)
    ok = await client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 1})
    bad = await client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": "many"})
    assert (ok.status_code, bad.status_code) == (200, 422)

    def logged() -> list[dict[str, object]]:
        return [
            r.msg
            for r in caplog.records
            if r.name == "session_service.http" and isinstance(r.msg, dict)
        ]

    statuses = [m["status"] for m in logged() if m.get("session_id") == s["id"]]
    assert statuses == [422]
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    await client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 1})
    assert [m["status"] for m in logged() if m.get("session_id") == s["id"]] == [200]


@pytest.mark.e2e
def test_json_logs_of_a_dev_stack_are_json_lines_only_with_the_temporal_core_in_them(
    tmp_path: Path,
) -> None:
    """Start and stop the whole stack with LOG_FORMAT=json, stdout and stderr in one file
    as a container runtime collects them: every line is a JSON object, none carries an
    ANSI escape, and the Temporal core's own records are among them (forwarded, not
    printed beside the stream by the core's console logger)."""
    stack = DevStack(tmp_path / "data")
    try:
        stack.start(LOG_FORMAT="json", LOG_LEVEL="INFO")
        with httpx.Client(base_url=stack.url, timeout=30) as c:
            assert c.get("/health/ready").status_code == 200
        assert stack.proc is not None
        os.killpg(stack.proc.pid, signal.SIGTERM)
        assert stack.proc.wait(90) == 0
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait(30)
    text = stack.log.read_text()
    assert "\x1b" not in text
    events = []
    for line in text.splitlines():
        event = json.loads(line)  # a non-JSON line fails here, naming itself
        assert isinstance(event, dict) and {"event", "level", "logger", "timestamp"} <= set(event)
        events.append(event)
    core = [e for e in events if e["logger"].startswith("temporalio.core")]
    assert core, "no record of the Temporal core was forwarded"
