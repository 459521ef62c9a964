"""Logs as events: JSON lines in production, readable lines in ``dev``.

Every record, ours or a library's (uvicorn, temporalio, asyncpg, and the
Temporal core's own, forwarded by the SDK runtime: runtime.py), goes through
structlog, so request ids, operation ids and session ids bound in context
vars appear on whatever is logged while they apply. With tracing on
(tracing.py), so do the ``trace_id`` and ``span_id`` of the span in progress.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_trace_ids = False


def with_trace_ids() -> None:
    """Called when tracing is set up: from then on, lines carry the current span's ids."""
    global _trace_ids
    _trace_ids = True


def _add_trace_ids(_: Any, __: str, event: Any) -> Any:
    """The ids of the span in progress, as trace backends print them (hex)."""
    if not _trace_ids:
        return event
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _add_trace_ids,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def _core_fields(_: Any, __: str, event: Any) -> Any:
    """A forwarded Temporal core record's target (the Rust module) and fields, as keys
    of the event (the SDK would otherwise fold them into the logger name and message)."""
    core = getattr(event.get("_record"), "temporal_log", None)
    if core is None:
        return event
    event.setdefault("target", core.target)
    fields: dict[str, Any] = getattr(core, "fields", None) or {}
    for key, value in fields.items():
        event.setdefault(key, value)
    return event


def configure(*, json_logs: bool, level: str = "INFO") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, _core_fields],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_logs else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _keep(_: Any, __: str, event: Any) -> Any:
    return event


def get(name: str) -> Any:
    return structlog.get_logger(name)


bind = structlog.contextvars.bind_contextvars
unbind = structlog.contextvars.reset_contextvars  # with the tokens ``bind`` returned
bound = structlog.contextvars.bound_contextvars
