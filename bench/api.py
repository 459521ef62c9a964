"""Benchmark of ``PUT /sessions/{id}/stats``: the durable service against the old in-memory design.

The issue asks whether moving sessions from a Python dict to Postgres keeps
the stats endpoint fast enough: at least 0.7x the in-memory app's throughput
and a p99 latency no worse than 1.5x, with 64 concurrent clients. So three
contenders are measured side by side in the same run, on the same machine:

* ``service``: ``session-service dev`` (embedded Postgres with ``fsync=on``,
  Temporal, Qdrant local mode, the API under uvicorn), each request one
  atomic ``UPDATE`` committed before the answer;
* ``in-memory``: ``bench.memapp``, the same endpoint on a dict of session
  dicts, same request model, same uvicorn settings, nothing durable;
* ``asyncpg``: no HTTP, the service's own UPDATE statement run by 64 tasks
  on an asyncpg pool sized like the service's - the floor the database sets.

All 64 clients hit one session (a hot row), as in the issue. Unless
``--no-diagnose``, diagnostics run in the same rounds to show where the
service's time goes: its FastAPI app without the database, the same tuned,
a prototype of the suggested changes (``bench.variants``), the asyncpg loop
with a smaller pool and on 64 rows, and the service on 64 rows.

The HTTP load generator is a separate process (``bench.load``) speaking raw
keep-alive HTTP/1.1, because httpx saturates its core long before the server
does (``--client httpx`` shows it); with two or more cores the servers (with
Postgres and Temporal) are pinned to the first core and every load generator
to the second. Each round runs every contender once (warm-up, then a fixed
duration), the order rotating between rounds; the medians over rounds are
reported. The machine may be shared: each run waits (bounded) for it to be
quiet, reports the CPU other processes took during it, and is repeated once
when that was more than ``NOISE`` of a core. At the end the stored counters
must equal the number of 200 answers each contender got (exit status 1
otherwise). The time ``session-service dev`` takes to answer ``/health`` with
200 is measured on a fresh data dir and on a restart. Everything runs on
127.0.0.1 and under timeouts; the data dir is a temporary dir, removed after.

Run: ``make bench`` or ``.venv/bin/python -m bench.api [--duration S] [--rounds N]``.
Writes a Markdown table to stdout and the raw numbers to bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from session_service.embedded import EmbeddedPostgres, free_port
from session_service.settings import Settings

MAIN = ("service", "in-memory", "asyncpg")  # the three contenders of the issue
BODY: dict[str, int] = {"urls_processed": 1, "content_analyzed": 1}
TARGET_THROUGHPUT = 0.7  # service req/s over in-memory req/s, at least
TARGET_P99 = 1.5  # service p99 over in-memory p99, at most
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "api.json"
NOISE = 0.25  # cores used by other processes above which a run is repeated
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Layout:
    """Which cores the servers and the load generators may use (None: any)."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Layout:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:2]))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned: every process may run on any core"
        return (
            f"servers (the API process and all its children: Postgres, Temporal) on core "
            f"{min(self.server)}; load generators (HTTP client, asyncpg loop) on core "
            f"{min(self.client)}"
        )


def pin_to(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and all it starts later) to ``cpus``."""
    if cpus is None:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def child_env() -> dict[str, str]:
    """Our environment without anything that would replace a part of the embedded stack."""
    drop = {"DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST", "SESSION_API_KEYS"}
    return {k: v for k, v in os.environ.items() if k.upper() not in drop}


class Server:
    """An HTTP server on 127.0.0.1 run as the leader of its own process group."""

    def __init__(self, name: str, argv: list[str], port: int, logfile: Path) -> None:
        self.name, self.argv, self.port, self.logfile = name, argv, port, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, cpus: frozenset[int] | None) -> float:
        """Start it; return the seconds from process start to ``/health`` answering 200."""
        began = time.monotonic()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
                preexec_fn=pin_to(cpus),
            )
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() - began < START_TIMEOUT:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
                if _healthy(client):
                    return time.monotonic() - began
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {START_TIMEOUT}s:\n{self.tail()}")

    def stop(self) -> int | None:
        """SIGTERM to the group, wait, SIGKILL if it hangs; the leader's exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT}s: SIGKILL")
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        return proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-chars:]


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def dev_server(data_dir: Path, logdir: Path, temporal_port: int | None = None) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "session_service.cli",
        "dev",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--temporal-port",
        str(temporal_port or free_port()),
        "--temporal-ui-port",
        str(free_port()),
    ]
    return Server("session-service dev", argv, port, logdir / "dev.log")


def module_server(name: str, module: str, logdir: Path, *extra: str) -> Server:
    """``python -m <module> --port P ...``: the in-memory app or a variant of the service."""
    port = free_port()
    argv = [sys.executable, "-m", module, "--port", str(port), *extra]
    return Server(name, argv, port, logdir / f"{name.replace(' ', '-')}.log")


def postgres_dsn(data_dir: Path) -> str:
    """The DSN ``session-service dev`` gives the API (same socket-dir rule)."""
    pg = EmbeddedPostgres(data_dir)
    pg.socket_dir = pg._choose_socket_dir()
    return pg.dsn


def measure_startup(data_dir: Path, logdir: Path) -> dict[str, Any]:
    """Seconds to a healthy /health: on an empty data dir, then restarted on it."""
    times: dict[str, Any] = {}
    for label in ("fresh_s", "restart_s"):
        dev = dev_server(data_dir, logdir)
        try:
            times[label] = dev.start(None)
        finally:
            times[label.replace("_s", "_exit_code")] = dev.stop()
        log(f"dev start ({label[:-2]}): {times[label]:.2f} s")
    return times


def create_sessions(server: Server, name: str, count: int = 1) -> tuple[str, ...]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = []
        for i in range(count):
            r = client.post("/sessions", json={"name": f"{name}-{i}"})
            r.raise_for_status()
            ids.append(str(r.json()["id"]))
        return tuple(ids)


def new_ids(count: int = 1) -> tuple[str, ...]:
    """Session ids for the stub app, which takes any id."""
    return tuple(str(uuid.uuid4()) for _ in range(count))


@dataclass(frozen=True)
class Target:
    """One contender: where its load goes, and what it is."""

    name: str
    about: str
    server: Server  # the load goes here; its process tree's CPU is the server's
    session_ids: tuple[str, ...]
    dsn: str | None = None  # set: the bare asyncpg loop instead of HTTP
    pool_max: int = 0
    reader: Server | None = None  # where the counters are read (default: server)
    read_prefix: str = "/sessions/"
    also: tuple[Server, ...] = ()  # more trees whose CPU is the server's (its Postgres)

    def argv(self, client: str) -> list[str]:
        pids = [f"--server-pid={s.pid}" for s in (self.server, *self.also)]
        if self.dsn is not None:
            return [
                "pg",
                f"--dsn={self.dsn}",
                f"--pool-min={min(Settings().pg_pool_min, self.pool_max)}",
                f"--pool-max={self.pool_max}",
                *(f"--session-id={sid}" for sid in self.session_ids),
                *pids,
            ]
        return [
            client,
            f"--port={self.server.port}",
            *(f"--path=/sessions/{sid}/stats" for sid in self.session_ids),
            *pids,
        ]

    def stored(self) -> dict[str, int]:
        """The counters stored for all its sessions, summed."""
        totals = dict.fromkeys(BODY, 0)
        reader = self.reader or self.server
        with httpx.Client(base_url=reader.url, timeout=30) as client:
            for sid in self.session_ids:
                r = client.get(f"{self.read_prefix}{sid}")
                r.raise_for_status()
                stats = r.json()["processing_stats"]
                for key in totals:
                    totals[key] += int(stats.get(key, 0))
        return totals


def run_load(target: Target, args: argparse.Namespace, cpus: frozenset[int] | None) -> Any:
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        *target.argv(args.client),
        f"--body={json.dumps(BODY)}",
        f"--concurrency={args.concurrency}",
        f"--warmup={args.warmup}",
        f"--duration={args.duration}",
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        check=False,
        timeout=args.warmup + args.duration + 90,
        env=child_env(),
        preexec_fn=pin_to(cpus),
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout)


def wait_quiet(limit: float = 0.15, timeout: float = 30.0) -> float:
    """Wait (bounded) until the machine is nearly idle; the busy fraction last seen."""
    deadline = time.monotonic() + timeout
    busy = psutil.cpu_percent(interval=0.5) / 100
    while busy > limit and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=0.5) / 100
    if busy > limit:
        log(f"the machine is still {busy:.0%} busy with other work: numbers will be noisy")
    return busy


def run_once(target: Target, args: argparse.Namespace, layout: Layout, rnd: int) -> list[Any]:
    """One run; repeated (``--retries`` times at most) while other processes used more
    than ``NOISE`` of a core during it. Every attempt is returned (the counters check
    needs them all); the quietest is marked ``kept`` and is the one summarised."""
    attempts: list[Any] = []
    for attempt in range(args.retries + 1):
        busy = wait_quiet()
        result = run_load(target, args, layout.client)
        result.update(round=rnd, attempt=attempt + 1, busy_before=busy, kept=False)
        attempts.append(result)
        log(
            f"round {rnd} {target.name:>20}: {result['rps']:7.0f} req/s  "
            f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
            f"errors {result['errors']}  other CPU {result['cpu']['other']:.2f}"
        )
        if result["cpu"]["other"] <= NOISE:
            break
    min(attempts, key=lambda a: a["cpu"]["other"])["kept"] = True
    return attempts


def run_rounds(
    targets: list[Target], args: argparse.Namespace, layout: Layout
) -> dict[str, list[Any]]:
    """Every contender once per round; the order rotates so none always goes first."""
    runs: dict[str, list[Any]] = {t.name: [] for t in targets}
    for r in range(args.rounds):
        shift = r % len(targets)
        for target in targets[shift:] + targets[:shift]:
            runs[target.name] += run_once(target, args, layout, r + 1)
    return runs


def summarize(attempts: list[Any]) -> dict[str, Any]:
    """Medians over rounds (each metric on its own) of the kept attempts."""
    runs = [a for a in attempts if a["kept"]]

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    roles = sorted({k for r in runs for k in r["cpu"]["server"]})
    ncores = len(runs[0]["cpu"]["cores"])
    return {
        "rps": median([r["rps"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "repeated": len(attempts) - len(runs),
        "loadgen_cpu": median([r["cpu"]["loadgen"] for r in runs]),
        "other_cpu": median([r["cpu"]["other"] for r in runs]),
        "cores_busy": [median([r["cpu"]["cores"][i] for r in runs]) for i in range(ncores)],
        "server_cpu": {
            role: median([r["cpu"]["server"].get(role, 0.0) for r in runs]) for role in roles
        },
    }


def compare(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    service, memory = summary["service"], summary["in-memory"]
    throughput = service["rps"] / memory["rps"]
    p99 = service["p99_ms"] / memory["p99_ms"]
    return {
        "throughput_ratio": throughput,
        "throughput_target": TARGET_THROUGHPUT,
        "throughput_met": throughput >= TARGET_THROUGHPUT,
        "p99_ratio": p99,
        "p99_target": TARGET_P99,
        "p99_met": p99 <= TARGET_P99,
    }


TABLE_STATS = """
SELECT n_tup_upd AS updates, n_tup_hot_upd AS hot_updates, n_dead_tup AS dead_rows,
       autovacuum_count AS autovacuums,
       (SELECT count(*) FROM pg_indexes WHERE tablename = 'sessions') AS indexes
FROM pg_stat_user_tables WHERE relname = 'sessions'
"""


def table_stats(dsn: str) -> dict[str, Any]:
    """How Postgres took the UPDATEs: HOT or not (a HOT update writes no index entry)."""

    async def query() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await asyncio.sleep(1)  # backends report their counters about once a second
            row = await conn.fetchrow(TABLE_STATS)
            return dict(row) if row is not None else {}
        finally:
            await conn.close()

    return asyncio.run(query())


def check_counters(targets: list[Target], runs: dict[str, list[Any]]) -> dict[str, Any]:
    """Each contender's stored counters against the 200 answers it got."""
    checks: dict[str, Any] = {}
    for target in targets:
        sent = sum(r["ok_total"] for r in runs[target.name])
        stored = target.stored()
        ok = all(value == sent * BODY[k] for k, value in stored.items())
        checks[target.name] = {"successful_requests": sent, "stored": stored, "ok": ok}
        log(f"counters {target.name:>20}: {sent} successful requests, stored {stored}: {ok}")
    return checks


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _row(name: str, s: dict[str, Any]) -> str:
    server = ", ".join(f"{k} {v:.2f}" for k, v in s["server_cpu"].items() if v >= 0.005)
    return (
        f"| {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['errors']} "
        f"| {server} | {s['loadgen_cpu']:.2f} | {s['other_cpu']:.2f} |"
    )


TABLE_HEAD = [
    "| contender | req/s | p50 ms | p99 ms | errors | server CPU (cores) "
    "| load gen CPU | other CPU |",
    "|---|---:|---:|---:|---:|---|---:|---:|",
]


def _ratio_lines(ratios: dict[str, Any]) -> list[str]:
    def met(flag: bool) -> str:
        return "met" if flag else "**not met**"

    return [
        "| ratio | measured | target | |",
        "|---|---:|---:|---|",
        f"| service / in-memory throughput | {ratios['throughput_ratio']:.2f}x "
        f"| >= {TARGET_THROUGHPUT}x | {met(ratios['throughput_met'])} |",
        f"| service p99 / in-memory p99 | {ratios['p99_ratio']:.2f}x "
        f"| <= {TARGET_P99}x | {met(ratios['p99_met'])} |",
    ]


def markdown(report: dict[str, Any]) -> str:
    summary, startup, about = report["summary"], report["startup"], report["about"]
    lines = [
        f"{report['rounds']} rounds x {report['duration_s']:g} s per contender "
        f"(+{report['warmup_s']:g} s warm-up), {report['concurrency']} concurrent clients, "
        f"HTTP client `{report['client']}`; medians over rounds. CPU in cores "
        "(1.00 = one core busy) over the measured window; other CPU = processes not in "
        f"the benchmark (a run with more than {NOISE} is repeated once; the quieter is "
        f"kept; {sum(s['repeated'] for s in summary.values())} repeated).",
        "",
        *TABLE_HEAD,
        *(_row(name, summary[name]) for name in MAIN),
        "",
        *_ratio_lines(report["ratios"]),
    ]
    diagnostics = [name for name in summary if name not in MAIN]
    if diagnostics:
        lines += ["", "Diagnostics (same run, same rounds):", "", *TABLE_HEAD]
        lines += [_row(name, summary[name]) for name in diagnostics]
        lines += [""] + [f"- `{name}`: {about[name]}" for name in diagnostics]
    lines += [
        "",
        f"`session-service dev` to a healthy /health: fresh data dir {startup['fresh_s']:.2f} s, "
        f"restart {startup['restart_s']:.2f} s (not pinned); restart pinned to the server "
        f"core {startup['pinned_restart_s']:.2f} s.",
        "",
        "`sessions` table after the run: {updates} UPDATEs, {hot_updates} of them HOT, "
        "{indexes} indexes, {autovacuums} autovacuums.".format(**report["sessions_table"]),
        "",
        "Counters stored = successful requests: "
        + ", ".join(
            f"{n} {'ok' if c['ok'] else 'MISMATCH'}" for n, c in report["counters"].items()
        ),
    ]
    return "\n".join(lines)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], capture_output=True, text=True, check=False, timeout=10, cwd=ROOT
    )
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_service_files": _git("status", "--porcelain", "session_service").splitlines(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_before": os.getloadavg(),
    }


def main_targets(dev: Server, memapp: Server, dsn: str) -> list[Target]:
    pool_max = Settings().pg_pool_max
    return [
        Target("service", "session-service dev", dev, create_sessions(dev, "service")),
        Target("in-memory", "bench.memapp", memapp, create_sessions(memapp, "in-memory")),
        Target(
            "asyncpg",
            f"the service's UPDATE, 64 tasks, pool max {pool_max}, no HTTP",
            dev,
            create_sessions(dev, "asyncpg"),
            dsn,
            pool_max,
        ),
    ]


def variant_servers(logdir: Path, dsn: str, temporal: str, workdir: Path) -> list[Server]:
    """bench.variants: the service's app without its database, tuned, and tuned on Postgres
    (each of the last two with a Qdrant local dir of its own)."""

    def real(name: str) -> list[str]:
        return ["--dsn", dsn, "--temporal", temporal, "--data-dir", str(workdir / name)]

    return [
        module_server("app-no-db", "bench.variants", logdir, "--stub"),
        module_server("app-no-db-tuned", "bench.variants", logdir, "--stub", "--tuned"),
        module_server("service-tuned", "bench.variants", logdir, "--tuned", *real("service-tuned")),
        module_server(
            "service-tuned-no-log",
            "bench.variants",
            logdir,
            "--tuned",
            "--no-request-log",
            *real("service-tuned-no-log"),
        ),
    ]


def diagnostic_targets(
    dev: Server, variants: list[Server], dsn: str, concurrency: int
) -> list[Target]:
    stub, stub_tuned, tuned, tuned_no_log = variants
    pool_max = Settings().pg_pool_max
    tuning = (
        "`get_sessions`/`get_actor` as `async def` (no thread-pool hop), the stats "
        "route matched first and `gc.freeze()` after start-up"
    )
    return [
        Target(
            "app-no-db",
            "the service's FastAPI app (all routes, middleware, dependencies) with "
            "`add_stats` replaced by a dict update: its HTTP layer alone",
            stub,
            new_ids(),
            read_prefix="/bench-stub/sessions/",
        ),
        Target(
            "app-no-db-tuned",
            f"the same with {tuning}",
            stub_tuned,
            new_ids(),
            read_prefix="/bench-stub/sessions/",
        ),
        Target(
            "service-tuned",
            f"the service's app on the same Postgres with {tuning}, and concurrent "
            "increments of a session coalesced into one UPDATE (each answer still "
            "after its commit); a prototype of the suggested change",
            tuned,
            create_sessions(dev, "service-tuned"),
            reader=dev,
            also=(dev,),
        ),
        Target(
            "service-tuned-no-log",
            "service-tuned without the request log line and HTTP metrics middlewares: "
            "what those two cost",
            tuned_no_log,
            create_sessions(dev, "service-tuned-no-log"),
            reader=dev,
            also=(dev,),
        ),
        Target(
            "asyncpg-pool4",
            f"the bare UPDATE loop on one row with a pool of 4 instead of {pool_max}: "
            "fewer backends queueing on the row lock",
            dev,
            create_sessions(dev, "asyncpg-pool4"),
            dsn,
            4,
        ),
        Target(
            f"asyncpg-{concurrency}rows",
            f"the bare UPDATE loop, pool max {pool_max}, each task on its own session: no hot row",
            dev,
            create_sessions(dev, "asyncpg-rows", concurrency),
            dsn,
            pool_max,
        ),
        Target(
            f"service-{concurrency}rows",
            "the service, each client connection on its own session: no hot row",
            dev,
            create_sessions(dev, "service-rows", concurrency),
        ),
    ]


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    layout = Layout.choose(not args.no_pin)
    data_dir, logdir = workdir / "data", workdir / "logs"
    logdir.mkdir()
    report: dict[str, Any] = {"machine": machine(), "layout": layout.describe()}
    report["startup"] = measure_startup(data_dir, logdir)
    temporal_port, dsn = free_port(), postgres_dsn(data_dir)
    dev = dev_server(data_dir, logdir, temporal_port)
    memapp = module_server("in-memory app", "bench.memapp", logdir)
    variants = (
        variant_servers(logdir, dsn, f"127.0.0.1:{temporal_port}", workdir) if args.diagnose else []
    )
    servers = [memapp, *variants]
    try:
        report["startup"]["pinned_restart_s"] = dev.start(layout.server)
        for server in servers:
            server.start(layout.server)
        targets = main_targets(dev, memapp, dsn)
        if args.diagnose:
            targets += diagnostic_targets(dev, variants, dsn, args.concurrency)
        runs = run_rounds(targets, args, layout)
        report["counters"] = check_counters(targets, runs)
        report["sessions_table"] = table_stats(dsn)
    finally:
        for server in servers:
            server.stop()
        report["startup"]["bench_exit_code"] = dev.stop()
    report["about"] = {t.name: t.about for t in targets}
    report["runs"] = runs
    report["summary"] = {t.name: summarize(runs[t.name]) for t in targets}
    report["ratios"] = compare(report["summary"])
    report["statement"] = runs["asyncpg"][0]["statement"]
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="PUT /sessions/{id}/stats: service vs in-memory app vs bare asyncpg."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s before it")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help=f"repeat a run this often at most while other processes use > {NOISE} core",
    )
    parser.add_argument(
        "--no-diagnose",
        dest="diagnose",
        action="store_false",
        help="only the three contenders of the issue, not the diagnostics",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # a short path keeps the Postgres socket inside the data dir
    workdir = Path(tempfile.mkdtemp(prefix="ssbench-", dir="/tmp"))
    try:
        report = bench(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.update(
        client=args.client,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    log(f"raw numbers in {args.output}")
    return 0 if all(c["ok"] for c in report["counters"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
