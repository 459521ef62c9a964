"""Closed-loop load generators of bench.api, each run in a process of its own.

``python -m bench.load raw ...`` keeps ``--concurrency`` workers busy with ``PUT``
requests, hand-written HTTP/1.1 on keep-alive connections (httpx saturated its own core
long before the servers), each worker sending its next request as soon as the previous
answer is read; ``python -m bench.load pg ...`` does the same with the service's exact
UPDATE on an asyncpg pool, no HTTP.

Requests completed during the warm-up are not measured (but are counted in
``ok_total``, which the caller compares with the stored counter). Prints one
JSON object on stdout: throughput, latency percentiles, errors, and the CPU
use of this process, of each core and of the server's process tree, all taken
at the exact edges of the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import psutil

from session_service.domain.models import StatsUpdate
from session_service.stores.postgres import create_pool
from session_service.stores.session_rows import SessionRows

Call = Callable[[], Awaitable[bool]]


@dataclass
class Tally:
    """What the workers saw; only completions inside [start, end) are measured."""

    start: int
    end: int
    latencies: list[int] = field(default_factory=list)
    ok_total: int = 0
    errors: int = 0

    def record(self, began: int, done: int, ok: bool) -> None:
        self.ok_total += ok
        if self.start <= done < self.end:
            if ok:
                self.latencies.append(done - began)
            else:
                self.errors += 1


Snapshot = tuple[float, float, float, dict[str, float]]  # wall, own, machine, server


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1] / 1e6


def _role(proc: psutil.Process, api: int) -> str:
    if proc.pid == api:
        return "api"
    name = proc.name()
    return name if name in ("postgres", "temporal") else "other"


def server_cpu(roots: list[int]) -> dict[str, float]:
    """CPU seconds of the servers' process trees by role; the first root is the API."""
    totals: dict[str, float] = {}
    procs: dict[int, psutil.Process] = {}
    for root in roots:
        parent = psutil.Process(root)
        procs.update((p.pid, p) for p in [parent, *parent.children(recursive=True)])
    for proc in procs.values():
        try:
            t = proc.cpu_times()
            role = _role(proc, roots[0])
        except psutil.Error:
            continue
        totals[role] = totals.get(role, 0.0) + t.user + t.system
    return totals


def snapshot(server_pids: list[int]) -> Snapshot:
    """CPU seconds at one instant: this process, the whole machine, the server trees."""
    own, t = os.times(), psutil.cpu_times()
    machine = t.user + t.nice + t.system + t.irq + t.softirq
    return time.perf_counter(), own.user + own.system, machine, server_cpu(server_pids)


def usage(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Fractions of one core used between two snapshots; ``other`` is everything on the
    machine that is neither this process nor the servers' trees (noise)."""
    wall = b[0] - a[0]
    own = (b[1] - a[1]) / wall
    server = {k: (v - a[3].get(k, 0.0)) / wall for k, v in b[3].items()}
    other = max(0.0, (b[2] - a[2]) / wall - own - sum(server.values()))
    return {"loadgen": own, "server": server, "other": other}


async def worker(call: Call, tally: Tally) -> None:
    while (began := time.perf_counter_ns()) < tally.end:
        try:
            ok = await call()
        except Exception:  # a failed request is counted, never fatal
            ok = False
        tally.record(began, time.perf_counter_ns(), ok)


async def measure(
    calls: list[Call], warmup: float, duration: float, server_pids: list[int]
) -> dict[str, Any]:
    """Run one worker per call; snapshot CPU at the window's edges; summarise."""
    now = time.perf_counter_ns()
    tally = Tally(start=now + int(warmup * 1e9), end=now + int((warmup + duration) * 1e9))
    workers = asyncio.gather(*(worker(call, tally) for call in calls))
    await asyncio.sleep(warmup)
    first = snapshot(server_pids)
    await asyncio.sleep(max(0.0, (tally.end - time.perf_counter_ns()) / 1e9))
    second = snapshot(server_pids)
    await asyncio.wait_for(workers, timeout=60)
    tally.latencies.sort()
    return {
        "requests": len(tally.latencies),
        "errors": tally.errors,
        "ok_total": tally.ok_total,
        "duration_s": duration,
        "rps": len(tally.latencies) / duration,
        "p50_ms": percentile(tally.latencies, 0.50),
        "p99_ms": percentile(tally.latencies, 0.99),
        "mean_ms": sum(tally.latencies) / max(1, len(tally.latencies)) / 1e6,
        "cpu": usage(first, second),
    }


# raw HTTP/1.1 keep-alive client


class RawConnection:
    """One keep-alive connection that sends the same request again and again."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> bool:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(self.request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            await self.reader.readexactly(_content_length(head))
        except BaseException:
            self.close()
            raise
        return head[9:12] == b"200"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise ValueError("the response has no Content-Length")


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def paths(args: argparse.Namespace) -> list[str]:
    """Worker k uses the k-th path, round robin (one path: every worker on one session)."""
    return [args.path[k % len(args.path)] for k in range(args.concurrency)]


async def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.encode()
    conns = [
        RawConnection("127.0.0.1", args.port, http_request("127.0.0.1", args.port, path, body))
        for path in paths(args)
    ]
    try:
        return await measure([c.send for c in conns], args.warmup, args.duration, args.server_pid)
    finally:
        for c in conns:
            c.close()


# the bare asyncpg loop


class _Capture:
    """Stands in for the pool to capture the statement the repository would run."""

    sql: str = ""
    args: tuple[Any, ...] = ()

    async def fetchrow(self, sql: str, *args: Any) -> bool:
        self.sql, self.args = sql, args
        return True


async def stats_statement(session_id: str, body: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE (and its arguments) that ``PUT /sessions/{id}/stats`` runs for ``body``,
    taken from ``SessionRows.increment_stats`` itself so that it cannot drift."""
    update = StatsUpdate.model_validate(body)
    capture = _Capture()
    rows = SessionRows(cast(asyncpg.Pool, capture))
    deltas = update.model_dump(exclude={"metadata"}, exclude_none=True)
    await rows.increment_stats(session_id, deltas, update.metadata)
    return capture.sql, capture.args


async def run_pg(args: argparse.Namespace) -> dict[str, Any]:
    body = json.loads(args.body)
    statements = [await stats_statement(sid, body) for sid in args.session_id]
    pool = await create_pool(args.dsn, args.pool_min, args.pool_max)

    def caller(sql: str, sql_args: tuple[Any, ...]) -> Call:
        async def call() -> bool:
            return await pool.fetchrow(sql, *sql_args) is not None

        return call

    calls = [caller(*statements[k % len(statements)]) for k in range(args.concurrency)]
    try:
        result = await measure(calls, args.warmup, args.duration, args.server_pid)
    finally:
        await pool.close()
    result["statement"] = " ".join(statements[0][0].split())
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["raw", "pg"])
    parser.add_argument("--body", required=True, help="the JSON body of PUT .../stats")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="root of a server process tree whose CPU to report; the first is the API",
    )
    parser.add_argument("--port", type=int, help="raw: the server's port on 127.0.0.1")
    parser.add_argument("--path", action="append", help="raw: /sessions/<id>/stats (repeatable)")
    parser.add_argument("--dsn", help="pg: the service's Postgres")
    parser.add_argument(
        "--session-id", action="append", help="pg: a session row to update (repeatable)"
    )
    parser.add_argument("--pool-min", type=int, default=2)
    parser.add_argument("--pool-max", type=int, default=20)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runner = {"raw": run_raw, "pg": run_pg}[args.kind]
    result = asyncio.run(runner(args))
    result["affinity"] = sorted(os.sched_getaffinity(0))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
