"""Operator commands over the HTTP API: ``session-service sessions ...`` and ``ops ...``.

Built on typer (help for every command and flag, shell completion) and rich (a
progress bar with rate and ETA while an operation runs, on a terminal only).
What users and scripts rely on, written down in the README:

- ``--json`` prints exactly one JSON document on stdout, one schema per command:
  an operation command always prints the Operation (finished or not, whatever
  the timing); an error prints a problem object.
- Errors are one line on stderr and an exit code, never a traceback: 1 an error
  answer or an operation that failed or was cancelled, 2 bad usage (a flag, a
  ``--part`` value, a body that does not validate), 3 the service can't be
  reached, 4 ``ops wait --timeout`` ran out, 141 stdout closed early (``| head``).
- The progress bar goes to stderr only when stderr is a terminal; otherwise one
  plain line per phase (or nothing with ``--json``), never bar frames in a file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from session_service.cli.operator_io import (
    DEFAULT_URL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PROG,
    ApiKey,
    Conn,
    Ctx,
    Json,
    NoWait,
    OperationId,
    Quit,
    SessionId,
    Url,
    User,
    _broken_pipe,
    _emit,
    _finish,
    _follow,
    _print_json,
    _report,
    _run,
    _say,
)
from session_service.client import (
    Outcome,
)
from session_service.domain.models import (
    MergeRequest,
    OperationStatus,
    SessionStatus,
    SplitPartRequest,
    SplitRequest,
)
from session_service.temporal.contracts import OperationKind

app = typer.Typer(
    name=PROG,
    help="Operator commands of the session service, over its HTTP API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
sessions_app = typer.Typer(
    help="List, show, merge, split, export, import, delete, offload and reload sessions.",
    no_args_is_help=True,
)
ops_app = typer.Typer(
    help="List, show, wait for and cancel long-running operations.", no_args_is_help=True
)
app.add_typer(sessions_app, name="sessions")
app.add_typer(ops_app, name="ops")


def _session_line(s: dict[str, Any]) -> str:
    return f"{s['id']}  {s['status']:<8}  {s['name']}"


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"


def _stream_lines(ctx: Ctx, items: Iterator[dict[str, Any]], line: Callable[..., str]) -> None:
    """A list: a JSON array with ``--json``; otherwise one line per item as it comes."""
    if ctx.as_json:
        _print_json(list(items))
        return
    empty = True
    for item in items:
        empty = False
        sys.stdout.write(line(item) + "\n")
    if empty:
        _say("nothing found")


@sessions_app.command("list")
def sessions_list(
    status: Annotated[SessionStatus | None, typer.Option(help="Only this status.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's sessions.")] = None,
    tags: Annotated[
        str | None, typer.Option(help="Comma-separated tags; sessions with any of them.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="At most this many sessions, newest first.")
    ] = 100,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Sessions the caller can read, newest first (pages followed as needed)."""

    def body(ctx: Ctx) -> int:
        def items() -> Iterator[dict[str, Any]]:
            found = ctx.client.list_sessions(
                status=status.value if status else None,
                owner_id=owner,
                tags=tags,
                limit=min(limit, 1000),
            )
            for n, s in enumerate(found):
                if n >= limit:
                    return
                yield s.model_dump(mode="json")

        _stream_lines(ctx, items(), _session_line)
        return 0

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("show")
def sessions_show(
    session_id: SessionId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """One session, as the API returns it."""

    def body(ctx: Ctx) -> int:
        shown = ctx.client.get_session(session_id).model_dump(mode="json")
        _emit(ctx, shown, json.dumps(shown, indent=2))
        return 0

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("merge")
def sessions_merge(
    session_ids: Annotated[
        list[str], typer.Argument(help="Two or more source session ids, in order.")
    ],
    name: Annotated[str | None, typer.Option(help="Name of the new session.")] = None,
    keep_sources: Annotated[
        bool, typer.Option("--keep-sources", help="Leave the sources as they are.")
    ] = False,
    no_wait: NoWait = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Merge sessions into a new one; the sources are archived unless --keep-sources."""

    def body(ctx: Ctx) -> int:
        request = MergeRequest(
            source_session_ids=session_ids, target_name=name, archive_sources=not keep_sources
        )
        return _finish(ctx, ctx.client.merge(request, wait=0), wait=not no_wait)

    _run(Conn(url, api_key, user, as_json), body)


def _parse_part(spec: str) -> tuple[str, list[int | str]]:
    name, sep, ids = spec.partition(":")
    point_ids: list[int | str] = [
        int(i) if i.strip().isdigit() else i.strip() for i in ids.split(",") if i.strip()
    ]
    if not sep or not name.strip() or not point_ids:
        raise typer.BadParameter(f"expected NAME:ID,ID,... (got {spec!r})", param_hint="--part")
    return name.strip(), point_ids


@sessions_app.command("split")
def sessions_split(
    session_id: SessionId,
    part: Annotated[
        list[str],
        typer.Option(
            metavar="NAME:ID,ID,...",
            help="A new session and the point ids it takes; repeat for each part.",
        ),
    ],
    keep_points: Annotated[
        bool, typer.Option("--keep-points", help="Copy the points; leave them in the source.")
    ] = False,
    archive_original: Annotated[
        bool, typer.Option("--archive-original", help="Archive the source when done.")
    ] = False,
    no_wait: NoWait = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Split some points of a session into new sessions."""
    parsed = [_parse_part(p) for p in part]

    def body(ctx: Ctx) -> int:
        request = SplitRequest(
            parts=[SplitPartRequest(name=n, point_ids=ids) for n, ids in parsed],
            remove_points=not keep_points,
            archive_original=archive_original,
        )
        return _finish(ctx, ctx.client.split(session_id, request, wait=0), wait=not no_wait)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("export")
def sessions_export(
    session_id: SessionId,
    download: Annotated[
        Path | None,
        typer.Option(help="Save the artifact to this file (streamed).", dir_okay=False),
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Write a durable, checksummed artifact of a session; optionally download it."""

    def body(ctx: Ctx) -> int:
        outcome = ctx.client.export(session_id, wait=0)
        op = (
            _follow(ctx, outcome.operation_id)
            if not outcome.done
            else ctx.client.get_operation(outcome.operation_id)
        )
        if op.status is OperationStatus.succeeded and download is not None:
            size = ctx.client.download_export(op.result["export_id"], download)
            _say(f"saved {size} bytes to {download}")
        return _report(ctx, op)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("import")
def sessions_import(
    artifact: Annotated[
        Path | None,
        typer.Argument(
            help="An artifact file (gzip'd or plain NDJSON), uploaded as a stream.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    export_id: Annotated[
        str | None, typer.Option(help="Import a stored export instead of a file.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the new session.")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Create a session from an artifact file or a stored export."""
    if (artifact is None) == (export_id is None):
        raise typer.BadParameter("give an artifact file or --export-id (one of them)")

    def body(ctx: Ctx) -> int:
        if export_id is not None:
            outcome = ctx.client.import_export(export_id, new_name=name, wait=0)
        else:
            assert artifact is not None
            outcome = ctx.client.import_file(artifact, new_name=name, wait=0)
        return _finish(ctx, outcome)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("delete")
def sessions_delete(
    session_id: SessionId,
    permanent: Annotated[
        bool,
        typer.Option(
            "--permanent",
            help="Remove the row and the points (an operation); otherwise mark it deleted.",
        ),
    ] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Delete a session: soft by default, for good with --permanent."""

    def body(ctx: Ctx) -> int:
        outcome = ctx.client.delete_session(
            session_id, permanent=permanent, wait=0 if permanent else None
        )
        if not permanent:
            outcome = Outcome(operation_id="", done=True, result=outcome.result)
        return _finish(ctx, outcome)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("offload")
def sessions_offload(
    session_id: SessionId,
    no_wait: NoWait = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Move a session's points to an artifact and drop its live collection."""

    def body(ctx: Ctx) -> int:
        return _finish(ctx, ctx.client.offload(session_id, wait=0), wait=not no_wait)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("reload")
def sessions_reload(
    session_id: SessionId,
    no_wait: NoWait = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Bring an offloaded session's points back."""

    def body(ctx: Ctx) -> int:
        return _finish(ctx, ctx.client.reload(session_id, wait=0), wait=not no_wait)

    _run(Conn(url, api_key, user, as_json), body)


@sessions_app.command("offloaded")
def sessions_offloaded(
    limit: Annotated[int, typer.Option(min=1, help="At most this many sessions.")] = 1000,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Offloaded sessions and their artifacts' sizes."""

    def body(ctx: Ctx) -> int:
        rows = ctx.client.offloaded(limit)
        total = sum(int(r["size_bytes"] or 0) for r in rows)
        lines = [
            f"{r['session_id']}  {r['points']:>9} points  {_size(r['size_bytes'])}  "
            f"{r['offloaded_at'] or ''}  {r['name']}"
            for r in rows
        ]
        lines.append(f"{len(rows)} offloaded sessions, {_size(total)} of artifacts")
        _emit(ctx, rows, "\n".join(lines))
        return 0

    _run(Conn(url, api_key, user, as_json), body)


class OpStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@ops_app.command("list")
def ops_list(
    session: Annotated[
        str | None, typer.Option(help="Only operations that read or write this session.")
    ] = None,
    kind: Annotated[OperationKind | None, typer.Option(help="Only this kind.")] = None,
    status: Annotated[OpStatus | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[
        int,
        typer.Option(min=1, help="At most this many, newest first (pages of up to 100)."),
    ] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Operations, newest first, filtered by session, kind and status."""

    def body(ctx: Ctx) -> int:
        def items() -> Iterator[dict[str, Any]]:
            found = ctx.client.iter_operations(
                session_id=session,
                kind=kind.value if kind else None,
                status=status.value if status else None,
                limit=min(limit, 100),
            )
            for n, op in enumerate(found):
                if n >= limit:
                    return
                yield op.model_dump(mode="json")

        def line(o: dict[str, Any]) -> str:
            return f"{o['id']}  {o['status']:<9}  {o.get('summary') or ''}"

        _stream_lines(ctx, items(), line)
        return 0

    _run(Conn(url, api_key, user, as_json), body)


@ops_app.command("show")
def ops_show(
    operation_id: OperationId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """One operation: status, progress, result or error."""

    def body(ctx: Ctx) -> int:
        op = ctx.client.get_operation(operation_id).model_dump(mode="json")
        _emit(ctx, op, json.dumps(op, indent=2))
        return 0

    _run(Conn(url, api_key, user, as_json), body)


@ops_app.command("wait")
def ops_wait(
    operation_id: OperationId,
    timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Give up after this many seconds (exit code 4)."),
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Follow an operation to its end, with its progress; exit code 1 unless it succeeds."""

    def body(ctx: Ctx) -> int:
        try:
            op = _follow(ctx, operation_id, timeout=timeout)
        except TimeoutError:
            op = ctx.client.get_operation(operation_id)
            if op.done:
                return _report(ctx, op)
            if ctx.as_json:
                _print_json(op.model_dump(mode="json"))
            _say(f"{operation_id} still running after {timeout:g} s")
            return EXIT_TIMEOUT
        return _report(ctx, op)

    _run(Conn(url, api_key, user, as_json), body)


@ops_app.command("cancel")
def ops_cancel(
    operation_id: OperationId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Ask a running operation to undo what it did and end cancelled."""

    def body(ctx: Ctx) -> int:
        op = ctx.client.cancel_operation(operation_id)
        _emit(ctx, op.model_dump(mode="json"), f"cancel requested for {op.id}")
        return 0

    _run(Conn(url, api_key, user, as_json), body)


# entry


def handles(argv: list[str]) -> bool:
    """Whether ``session-service argv`` is an operator command (or shell completion)."""
    if "_SESSION_SERVICE_COMPLETE" in os.environ:
        return True
    return bool(argv) and argv[0] in (
        "sessions",
        "ops",
        "--install-completion",
        "--show-completion",
    )


def main(argv: list[str]) -> int:
    """Run an operator command; returns its exit code (never raises, never a traceback)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=PROG, standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except Quit as q:
        code = q.code
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        _say("aborted")
        code = 130
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without a command
            print(exc.format_message(), file=sys.stderr)
        else:
            _say("error: " + " ".join(exc.format_message().split()))
        code = EXIT_USAGE if exc.exit_code == 2 else exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        _broken_pipe()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _broken_pipe()
    return code


def add_commands(sub: Any) -> None:
    """List the operator commands in ``session-service --help`` (argparse); ``cli.main``
    hands them to ``main`` above before argparse sees them."""
    sub.add_parser("sessions", help="list, show, merge, split, export, import, delete, ...")
    sub.add_parser("ops", help="list, show, wait for and cancel operations")
