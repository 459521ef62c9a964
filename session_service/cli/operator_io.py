"""How the operator commands run: the connection, one-line errors and exit codes,
--json output, and following an operation with a progress bar or plain lines (the
contract is in operator.py's docstring and the README)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from session_service.client import (
    ApiError,
    ConnectionFailed,
    Outcome,
    SyncSessionClient,
)
from session_service.domain.models import (
    Operation,
    OperationStatus,
)

PROG = "session-service"
DEFAULT_URL = "http://127.0.0.1:8087"
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_PIPE = 1, 2, 3, 4, 141


class Quit(Exception):
    """Ends a command with this exit code (the message, if any, is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# options every command takes, after its arguments as before

Url = Annotated[
    str, typer.Option("--url", envvar="SESSION_URL", help="Service URL.", show_envvar=True)
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="SESSION_API_KEY",
        help="Bearer token, when the service requires one.",
        show_envvar=True,
    ),
]
User = Annotated[
    str | None,
    typer.Option(
        "--user",
        envvar="SESSION_USER",
        help="Act as this user (sent as X-User-Id); without it, as a trusted service.",
        show_envvar=True,
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (schemas: README)."),
]
NoWait = Annotated[
    bool,
    typer.Option("--no-wait", help="Print the started operation and return at once."),
]
SessionId = Annotated[str, typer.Argument(help="Session id.", show_default=False)]
OperationId = Annotated[str, typer.Argument(help="Operation id (merge-..., split-...).")]


@dataclass
class Ctx:
    """One command's connection and output mode."""

    client: SyncSessionClient
    as_json: bool

    @property
    def tty(self) -> bool:
        return sys.stderr.isatty()


@dataclass(frozen=True)
class Conn:
    url: str
    api_key: str | None
    user: str | None
    as_json: bool


def _problem_for_unreachable(exc: ConnectionFailed) -> dict[str, Any]:
    return {
        "type": "urn:session-service:cli:unreachable",
        "title": "Service unreachable",
        "detail": str(exc),
    }


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def _run(conn: Conn, body: Callable[[Ctx], int]) -> None:
    """Run one command; every failure becomes one line on stderr and an exit code."""
    try:
        code = _guarded(conn, body)
        sys.stdout.flush()
    except BrokenPipeError:  # caught before click, which would end it with a bare 1
        _broken_pipe()
    raise Quit(code)


def _guarded(conn: Conn, body: Callable[[Ctx], int]) -> int:
    client = SyncSessionClient(conn.url, api_key=conn.api_key, user_id=conn.user)
    ctx = Ctx(client, conn.as_json)
    with client:
        try:
            return body(ctx)
        except ApiError as exc:
            return _api_error(ctx, exc)
        except ConnectionFailed as exc:
            if conn.as_json:
                _print_json(_problem_for_unreachable(exc))
            _say(f"error: {exc}")
            return EXIT_UNREACHABLE
        except ValidationError as exc:
            _say("error: " + "; ".join(_validation_lines(exc)))
            return EXIT_USAGE


def _api_error(ctx: Ctx, exc: ApiError) -> int:
    """An error answer; a failed operation's answer names the operation, whose record is
    printed then (so ``--json`` shows the Operation whatever the timing)."""
    op_id = exc.problem.get("operation_id")
    if op_id:
        try:
            return _report(ctx, ctx.client.get_operation(str(op_id)))
        except (ApiError, ConnectionFailed):
            pass
    if ctx.as_json:
        _print_json(exc.problem)
    title = exc.problem.get("title") or ""
    _say(f"error {exc.status}{' ' + str(title) if title else ''}: {exc.detail}")
    return EXIT_FAILED


def _validation_lines(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _emit(ctx: Ctx, data: Any, text: str) -> None:
    if ctx.as_json:
        _print_json(data)
    else:
        sys.stdout.write(text + "\n")


# progress


class Rate:
    """Points a second and the time left, from what the polls saw.

    Progress arrives in steps (a heartbeat per batch), too few for rich's own speed
    estimate; the rate here is the points done since the first poll that saw some,
    over the time since, and until a second such poll, since the operation started.
    """

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None

    def update(self, op: Operation, done: int, total: int | None) -> tuple[str, str]:
        now = time.monotonic()
        rate: float | None = None
        if self.first is None and done:
            self.first = (now, done)
        if self.first is not None and done > self.first[1] and now > self.first[0]:
            rate = (done - self.first[1]) / (now - self.first[0])
        elif done and op.created_at is not None:
            elapsed = (datetime.now(UTC) - op.created_at).total_seconds()
            rate = done / elapsed if elapsed > 0 else None
        if op.done and total:
            return (f"{rate:,.0f} points/s" if rate else "-- points/s"), "0:00:00"
        if not rate:
            return "-- points/s", "-:--:--"
        left = math.ceil((total - done) / rate) if total else None
        eta = "-:--:--" if left is None else str(timedelta(seconds=max(left, 0)))
        return f"{rate:,.0f} points/s", eta


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _describe(op: Operation) -> tuple[str, int | None, int]:
    p = op.progress or {}
    total = int(p.get("points_total") or 0) or None
    return f"{op.kind} {p.get('phase') or op.status.value}", total, int(p.get("points_done") or 0)


def _follow(ctx: Ctx, operation_id: str, timeout: float | None = None) -> Operation:
    """Wait for the operation, showing its progress the way stderr can take it."""
    if ctx.tty:
        with _bar() as bar:
            task = bar.add_task(operation_id, total=None, rate="-- points/s", eta="-:--:--")
            rate = Rate()

            def show(op: Operation) -> None:
                text, total, done = _describe(op)
                speed, eta = rate.update(op, done, total)
                bar.update(task, description=text, total=total, completed=done, rate=speed, eta=eta)

            return ctx.client.wait(operation_id, timeout=timeout, on_progress=show)
    if ctx.as_json:
        return ctx.client.wait(operation_id, timeout=timeout)
    last: list[str] = []

    def line(op: Operation) -> None:
        text, total, done = _describe(op)
        if not last or last[-1] != text:
            last.append(text)
            counts = f" {done}/{total}" if total else ""
            print(f"{op.id}: {text}{counts}", file=sys.stderr, flush=True)

    return ctx.client.wait(operation_id, timeout=timeout, on_progress=line)


def _report(ctx: Ctx, op: Operation) -> int:
    body = op.model_dump(mode="json")
    if op.status is OperationStatus.succeeded:
        _emit(ctx, body, f"{op.id} succeeded\n{json.dumps(op.result, indent=2, default=str)}")
        return 0
    if op.status is OperationStatus.running:
        _emit(ctx, body, f"{op.id} running; follow it with: {PROG} ops wait {op.id}")
        return 0
    message = op.error.message if op.error else op.status.value
    if ctx.as_json:
        _print_json(body)
    _say(f"{op.id} {op.status.value}: {message}")
    return EXIT_FAILED


def _finish(ctx: Ctx, outcome: Outcome, *, wait: bool = True) -> int:
    """An operation command's end: the Operation, whether it finished within the request
    or not (``--json``'s one schema)."""
    if outcome.done:
        if not outcome.operation_id:  # not an operation (a soft delete)
            _emit(ctx, outcome.result, json.dumps(outcome.result, indent=2, default=str))
            return 0
        return _report(ctx, ctx.client.get_operation(outcome.operation_id))
    assert outcome.operation is not None
    if not wait:
        return _report(ctx, outcome.operation)
    return _report(ctx, _follow(ctx, outcome.operation_id))


# commands


def _broken_pipe() -> NoReturn:
    # stdout's reader went away (``| head``): point stdout at /dev/null so the
    # interpreter's final flush can't complain, and end like a process killed by SIGPIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os._exit(EXIT_PIPE)
