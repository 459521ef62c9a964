"""OpenTelemetry tracing, switched on by ``OTEL_EXPORTER_OTLP_ENDPOINT`` and off otherwise.

One trace follows a caller's request from its HTTP span (FastAPI's
instrumentation) through the workflow it starts to that workflow's activities:
Temporal's ``TracingInterceptor`` on the client carries the context in the
workflow's and the activities' headers, and the worker picks the interceptor up
from the client it is built on. Log lines written inside a span carry its
``trace_id`` and ``span_id`` (logs.py), so a log search and a trace view meet.

The exporter is OTLP over HTTP/protobuf and reads the standard variables
itself (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_TIMEOUT``...), and the
resource reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. With the
endpoint unset nothing is set up: no provider, no interceptor, no middleware,
and the OpenTelemetry SDK is not even imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from session_service.obs import logs

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from temporalio.client import Interceptor

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "session-service"
# probes and scrapes would be most of the spans and tell nothing
UNTRACED_PATHS = "/health/live,/health/ready,/metrics"


@dataclass(frozen=True)
class Tracing:
    """A tracer provider and what hooks it into the HTTP side and the Temporal client."""

    provider: TracerProvider

    def interceptors(self) -> list[Interceptor]:
        """For ``Client.connect``: spans for starting workflows and, through the worker
        built on that client, for running workflows and activities. Workflows started
        without a caller's span (the retention schedule) still get one of their own."""
        from temporalio.contrib.opentelemetry import TracingInterceptor

        tracer = self.provider.get_tracer("session_service")
        return [TracingInterceptor(tracer, always_create_workflow_spans=True)]

    def instrument(self, app: FastAPI) -> None:
        """A server span per request, named by its route template."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls=UNTRACED_PATHS
        )

    def shutdown(self) -> None:
        """Export what is still buffered (at the end of the process)."""
        self.provider.shutdown()


_installed: Tracing | None = None


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def from_environment(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The process's tracing: made once, on the first call, if an OTLP endpoint is set.

    The API's app and the runtime both ask; they get the same provider."""
    global _installed
    if _installed is None and enabled(environ):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _installed = tracing_with(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_installed.provider)  # for libraries that trace by themselves
    return _installed


def tracing_with(processor: SpanProcessor) -> Tracing:
    """Tracing that hands finished spans to ``processor`` (tests: an in-memory exporter),
    without touching the global tracer provider."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    logs.with_trace_ids()
    return Tracing(provider)
