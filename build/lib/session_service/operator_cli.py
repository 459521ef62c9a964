"""Operator commands over the HTTP API: ``session-service sessions ...`` and ``ops ...``.

Human-readable by default, with a progress bar on stderr while an operation
runs; ``--json`` prints one JSON document on stdout for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from session_service.client import ApiError, Outcome, SessionClient
from session_service.models import MergeRequest, Operation, SplitPartRequest, SplitRequest


def add_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("SESSION_URL", "http://127.0.0.1:8087"),
        help="service URL (env SESSION_URL)",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("SESSION_API_KEY"),
        help="bearer token (env SESSION_API_KEY)",
    )
    common.add_argument(
        "--user",
        default=os.environ.get("SESSION_USER"),
        help="act as this user (X-User-Id; env SESSION_USER)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    sessions = sub.add_parser("sessions", help="list, show, merge, split, export, import, delete")
    s = sessions.add_subparsers(dest="action", required=True)
    p = s.add_parser("list", parents=[common])
    p.add_argument("--status")
    p.add_argument("--owner")
    p.add_argument("--tags", help="comma-separated, any of")
    p.add_argument("--limit", type=int, default=100)
    p = s.add_parser("show", parents=[common])
    p.add_argument("session_id")
    p = s.add_parser("merge", parents=[common])
    p.add_argument("session_ids", nargs="+")
    p.add_argument("--name")
    p.add_argument("--keep-sources", action="store_true", help="don't archive the sources")
    p.add_argument("--no-wait", action="store_true")
    p = s.add_parser("split", parents=[common])
    p.add_argument("session_id")
    p.add_argument(
        "--part",
        action="append",
        required=True,
        metavar="NAME:ID,ID,...",
        help="a new session and the point ids it takes (repeat)",
    )
    p.add_argument("--keep-points", action="store_true")
    p.add_argument("--archive-original", action="store_true")
    p.add_argument("--no-wait", action="store_true")
    p = s.add_parser("export", parents=[common])
    p.add_argument("session_id")
    p.add_argument("--download", type=Path, help="save the artifact here")
    p = s.add_parser("import", parents=[common])
    p.add_argument("artifact", nargs="?", type=Path)
    p.add_argument("--export-id")
    p.add_argument("--name")
    p = s.add_parser("delete", parents=[common])
    p.add_argument("session_id")
    p.add_argument("--permanent", action="store_true")
    sessions.set_defaults(func=lambda a: _run(a, _sessions))

    ops = sub.add_parser("ops", help="list, show, wait for and cancel operations")
    o = ops.add_subparsers(dest="action", required=True)
    p = o.add_parser("list", parents=[common])
    p.add_argument("--session")
    p.add_argument("--kind")
    p.add_argument("--status")
    for name in ("show", "wait", "cancel"):
        p = o.add_parser(name, parents=[common])
        p.add_argument("operation_id")
    ops.set_defaults(func=lambda a: _run(a, _ops))


def _run(args: argparse.Namespace, handler: Any) -> int:
    async def main() -> int:
        async with SessionClient(args.url, api_key=args.api_key, user_id=args.user) as client:
            try:
                return int(await handler(client, args))
            except ApiError as exc:
                _emit(args, exc.problem, f"error {exc.status}: {exc.problem.get('detail')}")
                return 1

    return asyncio.run(main())


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _bar(op: Operation) -> None:
    p = op.progress or {}
    total, done = int(p.get("points_total") or 0), int(p.get("points_done") or 0)
    width = 30
    filled = int(width * done / total) if total else 0
    line = f"\r{op.id} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {p.get('phase', '')}"
    sys.stderr.write(line.ljust(100)[:120])
    sys.stderr.flush()
    if op.done:
        sys.stderr.write("\n")


async def _finish(
    client: SessionClient, args: argparse.Namespace, outcome: Outcome, wait: bool = True
) -> int:
    """Print a finished operation's result, or follow a running one with a progress bar."""
    if outcome.done:
        _emit(
            args,
            {"operation_id": outcome.operation_id, "result": outcome.result},
            f"{outcome.operation_id} succeeded\n{json.dumps(outcome.result, indent=2)}",
        )
        return 0
    if not wait:
        assert outcome.operation is not None
        _emit(
            args,
            outcome.operation.model_dump(mode="json"),
            f"{outcome.operation_id} started; follow it with: session-service ops wait "
            f"{outcome.operation_id}",
        )
        return 0
    op = await client.wait(outcome.operation_id, on_progress=None if args.json else _bar)
    return _report(args, op)


def _report(args: argparse.Namespace, op: Operation) -> int:
    body = op.model_dump(mode="json")
    if op.status.value == "succeeded":
        _emit(args, body, f"{op.id} succeeded\n{json.dumps(op.result, indent=2)}")
        return 0
    message = op.error.message if op.error else op.status.value
    _emit(args, body, f"{op.id} {op.status.value}: {message}")
    return 1


def _session_line(s: dict[str, Any]) -> str:
    return f"{s['id']}  {s['status']:<8}  {s['name']}"


async def _sessions(client: SessionClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        found = []
        async for s in client.list_sessions(
            status=args.status, owner_id=args.owner, tags=args.tags, limit=min(args.limit, 1000)
        ):
            found.append(s.model_dump(mode="json"))
            if len(found) >= args.limit:
                break
        _emit(args, found, "\n".join(_session_line(s) for s in found) or "no sessions")
        return 0
    if args.action == "show":
        shown = (await client.get_session(args.session_id)).model_dump(mode="json")
        _emit(args, shown, json.dumps(shown, indent=2))
        return 0
    if args.action == "merge":
        body = MergeRequest(
            source_session_ids=args.session_ids,
            target_name=args.name,
            archive_sources=not args.keep_sources,
        )
        outcome = await client.merge(body, wait=0)
        return await _finish(client, args, outcome, wait=not args.no_wait)
    if args.action == "split":
        parts = []
        for spec in args.part:
            name, _, ids = spec.partition(":")
            point_ids: list[int | str] = [int(i) if i.isdigit() else i for i in ids.split(",") if i]
            parts.append(SplitPartRequest(name=name, point_ids=point_ids))
        split = SplitRequest(
            parts=parts, remove_points=not args.keep_points, archive_original=args.archive_original
        )
        outcome = await client.split(args.session_id, split, wait=0)
        return await _finish(client, args, outcome, wait=not args.no_wait)
    if args.action == "export":
        outcome = await client.export(args.session_id, wait=0)
        code = await _finish(client, args, outcome)
        if code == 0 and args.download:
            op = await client.get_operation(outcome.operation_id)
            size = await client.download_export(op.result["export_id"], args.download)
            if not args.json:
                print(f"saved {size} bytes to {args.download}")
        return code
    if args.action == "import":
        if args.export_id:
            outcome = await client.import_export(args.export_id, new_name=args.name, wait=0)
        elif args.artifact:
            outcome = await client.import_file(args.artifact, new_name=args.name, wait=0)
        else:
            print("give an artifact file or --export-id", file=sys.stderr)
            return 2
        return await _finish(client, args, outcome)
    if args.action == "delete":
        outcome = await client.delete_session(
            args.session_id, permanent=args.permanent, wait=0 if args.permanent else None
        )
        return await _finish(client, args, outcome)
    return 2


async def _ops(client: SessionClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        ops = await client.list_operations(
            session_id=args.session, kind=args.kind, status=args.status
        )
        _emit(
            args,
            [o.model_dump(mode="json") for o in ops],
            "\n".join(f"{o.id}  {o.status.value:<9}  {o.summary or ''}" for o in ops)
            or "no operations",
        )
        return 0
    if args.action == "show":
        op = await client.get_operation(args.operation_id)
        _emit(args, op.model_dump(mode="json"), json.dumps(op.model_dump(mode="json"), indent=2))
        return 0
    if args.action == "wait":
        op = await client.wait(args.operation_id, on_progress=None if args.json else _bar)
        return _report(args, op)
    if args.action == "cancel":
        op = await client.cancel_operation(args.operation_id)
        _emit(args, op.model_dump(mode="json"), f"cancel requested for {op.id}")
        return 0
    return 2
