"""Tracing: one trace from the HTTP request through the workflow to its activities,
log lines carrying its ids, and nothing of OpenTelemetry when no endpoint is set."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

from session_service.api.app import create_app
from session_service.obs import tracing
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal.worker import worker_of
from tests.conftest import Factory
from tests.test_operations import seeded


@dataclass
class Traced:
    client: httpx.AsyncClient
    spans: InMemorySpanExporter
    runtime: Runtime


@pytest.fixture
async def traced(settings: Settings, runtime: Runtime) -> AsyncIterator[Traced]:
    """An app and a worker on a runtime of their own (own task queue) with tracing on,
    exporting to memory; the stores are the shared runtime's."""
    spans = InMemorySpanExporter()
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"traced-{uuid.uuid4().hex[:8]}",
            "vector_index_min_points": 1,
        }
    )
    rt = await Runtime.open(
        own,
        vectors=runtime.vectors,
        run_migrations=False,
        traced=tracing.tracing_with(SimpleSpanProcessor(spans)),
    )
    app = create_app(own, rt)
    assert app._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            worker_of(rt),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            yield Traced(client, spans, rt)
    finally:
        await rt.close(close_vectors=False)


def _by_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context is not None}


def _ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[str]:
    names = []
    while span.parent is not None and span.parent.span_id in index:
        span = index[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_trace_from_the_request_through_the_workflow_to_its_activities(
    traced: Traced, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = await seeded(make, list(range(30)), tag="a")
    b = await seeded(make, list(range(30, 50)), tag="b")
    r = await traced.client.post("/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]})
    assert r.status_code == 200, r.text
    op = r.headers["Operation-Id"]
    # the search index is built by a child workflow after the merge answered: wait for it
    for _ in range(600):
        names = {s.name for s in traced.spans.get_finished_spans()}
        if "RunActivity:build_index" in names:
            break
        await asyncio.sleep(0.05)
    spans = traced.spans.get_finished_spans()
    index = _by_id(spans)
    http = [s for s in spans if s.name == "POST /sessions/merge"]
    assert len(http) == 1, sorted({s.name for s in spans})
    trace_id = http[0].context.trace_id if http[0].context else 0
    in_trace = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    for expected in (
        "StartWorkflow:MergeWorkflow",
        "RunWorkflow:MergeWorkflow",
        "StartActivity:copy_points",
        "RunActivity:copy_points",
        "RunActivity:build_index",
    ):
        assert expected in names, sorted(names)
    for span in in_trace:
        if span.name.split(":")[0] in ("StartWorkflow", "RunWorkflow", "RunActivity"):
            assert "POST /sessions/merge" in _ancestors(span, index), span.name
    # the SDK parents a workflow's spans on the span that started it (a workflow's own
    # span can't stay open across replays): request > start > run and activities
    run = next(s for s in in_trace if s.name == "RunActivity:copy_points")
    assert _ancestors(run, index)[:2] == [
        "StartActivity:copy_points",
        "StartWorkflow:MergeWorkflow",
    ]

    # a line the build_index activity logged carries the trace and its own span
    built = [
        rec.msg
        for rec in caplog.records
        if isinstance(rec.msg, dict) and rec.msg.get("event") == "search index built"
    ]
    mine = [m for m in built if m.get("operation_id") == f"index-{op}"]
    assert mine, built
    assert mine[0]["trace_id"] == format(trace_id, "032x")
    activity_span = next(s for s in in_trace if s.name == "RunActivity:build_index")
    assert activity_span.context is not None
    assert mine[0]["span_id"] == format(activity_span.context.span_id, "016x")


async def test_probes_and_scrapes_make_no_spans(traced: Traced) -> None:
    for path in ("/health/live", "/metrics"):
        assert (await traced.client.get(path)).status_code == 200
    assert traced.spans.get_finished_spans() == ()


async def test_without_an_endpoint_nothing_of_opentelemetry_is_set_up(
    runtime: Runtime, settings: Settings, client: httpx.AsyncClient
) -> None:
    """The suite's stack runs with no OTLP endpoint: no provider, interceptor or middleware."""
    assert not tracing.enabled()
    assert tracing.from_environment() is None
    assert runtime.tracing is None
    assert not any(
        isinstance(i, TracingInterceptor) for i in runtime.temporal.config()["interceptors"]
    )
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    app = create_app(settings, runtime)
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert (await client.get("/sessions")).status_code == 200
    assert not trace.get_current_span().get_span_context().is_valid


def test_an_endpoint_in_the_environment_switches_tracing_on() -> None:
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})


def test_spans_reach_the_otlp_endpoint_named_in_the_environment() -> None:
    """The production path, in a process of its own (it installs the global provider):
    the endpoint variable alone switches tracing on, and the spans arrive there over
    OTLP/HTTP, with the service's name."""
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = (
        "from opentelemetry import trace\n"
        "from session_service.obs import tracing\n"
        "t = tracing.from_environment()\n"
        "assert t is not None and trace.get_tracer_provider() is t.provider\n"
        "with t.provider.get_tracer('probe').start_as_current_span('probe-span'):\n"
        "    pass\n"
        "t.shutdown()\n"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
    }
    env.pop("OTEL_SERVICE_NAME", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=60
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr.decode()
    assert [path for path, _ in received] == ["/v1/traces"]
    assert b"probe-span" in received[0][1] and b"session-service" in received[0][1]


def test_without_an_endpoint_the_opentelemetry_sdk_is_not_even_loaded() -> None:
    """The cost of tracing switched off: an app built, the worker module loaded, and no
    module of the SDK, the exporter or the instrumentation imported."""
    script = (
        "import sys\n"
        "from session_service.obs import logs\n"
        "from session_service.temporal import worker  # noqa: F401\n"
        "from session_service.api.app import create_app\n"
        "from session_service.settings import Settings\n"
        "create_app(Settings())\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
        " 'opentelemetry.exporter', 'opentelemetry.instrumentation',"
        " 'temporalio.contrib.opentelemetry'))]\n"
        "assert not loaded, loaded\n"
        "assert not logs._trace_ids\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
