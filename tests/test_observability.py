"""/metrics moves with requests and operations; logs carry request and operation ids."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from session_service.api.app import create_app
from session_service.obs import logs
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import steps
from session_service.temporal.worker import worker_of
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
    assert moved("session_service_points_moved_total", activity_type=steps.COPY_POINTS.name) == 50
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

    assert (
        moved("session_service_points_moved_total", activity_type=steps.COPY_POINTS_BY_ID.name)
        == 20
    )
    assert moved("session_service_points_moved_total", activity_type=steps.REMOVE_POINTS.name) == 0
    assert (
        moved("session_service_points_removed_total", activity_type=steps.REMOVE_POINTS.name) == 20
    )


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


# -- the dashboard and the alert rules under deploy/ -------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "session-service.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# series Prometheus makes itself for every scrape target
SCRAPE_SERIES = {"up"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr, flags=re.I
    )
    expr = re.sub(r"\boffset\s+-?\w+", " ", expr)
    expr = re.sub(r"[a-zA-Z_]\w*\s*\(", "(", expr)  # function names
    expr = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w.lower() not in PROMQL_KEYWORDS}


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(doc["panels"]) for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_promql_name_parser_finds_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route!~"/x|y", '
        'job=~"$job"}[$__rate_interval]))) > 2 and on (instance) up == 0 '
        'or absent(b_total{x="1"}) / ignoring(kind) c offset 5m'
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "up", "b_total", "c"}


async def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(
    settings: Settings, runtime: Runtime
) -> None:
    """Exercise the service (requests, a 404, a readiness probe, a merge that builds a
    search index, a split), then read the names of every series /metrics serves (ours and
    the Temporal SDK's, worker metrics included): each name the dashboard's panels and the
    alert rules read must be among them, so no panel stays empty for a renamed metric."""
    own = settings.model_copy(
        update={"temporal_task_queue": f"obs-{uuid.uuid4().hex[:8]}", "vector_index_min_points": 1}
    )
    rt = Runtime(
        settings=own,
        pool=runtime.pool,
        vectors=runtime.vectors,
        temporal=runtime.temporal,
        sdk_metrics=runtime.sdk_metrics,
    )
    transport = httpx.ASGITransport(app=create_app(own, rt), raise_app_exceptions=False)
    async with (
        worker_of(rt),
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c,
    ):
        make = Factory(c)
        a = await seeded(make, list(range(20)), tag="a")
        b = await seeded(make, list(range(20, 30)), tag="b")
        await c.get("/sessions/00000000-0000-4000-8000-000000000000")
        await c.get("/health/ready")
        merged = await c.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
        assert merged.status_code == 200, merged.text
        target = merged.json()["id"]
        split = await c.post(
            f"/sessions/{target}/split", json={"parts": [{"name": "p", "point_ids": [1, 2]}]}
        )
        assert split.status_code == 200, split.text
        for _ in range(600):  # the index is built by a child workflow after the answer
            text = (await c.get("/metrics")).text
            if "session_service_index_build_seconds_count" in text:
                break
            await asyncio.sleep(0.05)
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    used: dict[str, set[str]] = {}
    for where, exprs in (
        ("dashboard", dashboard_exprs()),
        ("alerts", [r["expr"] for r in alert_rules()]),
    ):
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names, f"{where}: no metric in {expr!r}"
            for name in names:
                used.setdefault(name, set()).add(where)
    missing = {n: w for n, w in used.items() if n not in exported | SCRAPE_SERIES}
    assert not missing, f"used but not exported: {missing}"
    # the panels the dashboard promises are there
    assert {
        "session_service_http_requests_total",
        "session_service_http_request_duration_seconds_bucket",
        "session_service_operations_started_total",
        "session_service_operations_finished_total",
        "session_service_operation_duration_seconds_bucket",
        "session_service_points_moved_total",
        "session_service_points_removed_total",
        "temporal_worker_task_slots_available",
        "temporal_num_pollers",
        "temporal_long_request_latency_bucket",
        "temporal_activity_schedule_to_start_latency_bucket",
    } <= set(used)


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_source() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "session-service" and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        assert panel["title"] and panel["description"]


def test_alert_rules_are_in_prometheus_rule_format() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    groups = doc["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    duration = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
    alerts = []
    for group in groups:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        assert isinstance(group["rules"], list) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")")
            assert duration.match(rule.get("for", "0s"))
            assert rule["labels"]["severity"] in {"page", "ticket"}
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert {"summary", "description"} <= set(rule["annotations"])
            assert all(isinstance(v, str) for v in rule["annotations"].values())
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    assert {
        "SessionServiceHighErrorRate",
        "SessionServiceSlowRequests",
        "SessionServiceNotReady",
        "SessionServiceOperationsFailing",
        "SessionServiceNoWorkerPolling",
        "SessionServiceTasksWaiting",
    } <= set(alerts)
