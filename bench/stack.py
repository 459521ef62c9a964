"""The service under benchmark: ``session-service dev`` as a subprocess, its HTTP API and
its Temporal histories. Shared by every harness of the suite.

The stack runs from a frozen copy of ``session_service/`` (others edit the tree while a
benchmark runs, and Temporal's sandbox re-reads workflow modules for every run), on free
loopback ports and a fresh data dir, as the leader of its own process group, optionally
pinned to some cores. Every wait is bounded. :func:`code_facts` says which code ran: the
git commit and whether ``session_service/`` differed from it (dirty).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.sampling import MB, CpuWindow, MemorySampler, PySpy, idle_memory

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
WAIT = 300  # Prefer: wait=N, the API's maximum: long operations answer 200 when done
# ports other engineers' benchmarks use: never ours even if free right now
RESERVED_PORTS = {18087, 17233, 18233, 28087, 27233, 28233}
Cpus = frozenset[int] | None  # the cores a process may run on (None: any)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without anything that would replace a part of the embedded stack."""
    drop = {"DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST", "SESSION_API_KEYS"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env.update(extra or {})
    return env


def pin_to(cpus: Cpus) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and everything it starts later) to ``cpus``."""
    if cpus is None:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def machine_facts() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_total_mb": psutil.virtual_memory().total // MB,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip()


def code_facts() -> dict[str, Any]:
    """The commit under test, and whether ``session_service/`` differs from it."""
    uncommitted = _git("status", "--porcelain", "--", "session_service").splitlines()
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(uncommitted),
        "uncommitted_in_session_service": uncommitted,
    }


def snapshot_code(dest: Path) -> dict[str, Any]:
    """Copy ``session_service/`` as it is now into ``dest`` (the stack's cwd and
    PYTHONPATH); :func:`code_facts` and a hash of the copy."""
    target = dest / "session_service"
    shutil.copytree(
        REPO / "session_service", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode())
            digest.update(path.read_bytes())
    facts = code_facts()
    facts["git_head"] = facts["commit"]  # the name the first harnesses used
    return facts | {"snapshot_sha256": digest.hexdigest()[:16]}


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh dir under /tmp (short: the Postgres socket fits in it), removed after."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    log(f"working in {work}")
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class Process:
    """A server on 127.0.0.1 run as the leader of its own process group (stopped with
    its whole tree), optionally pinned to ``cpus``; ready when ``/health`` answers 200."""

    port: int
    logfile: Path
    cpus: Cpus
    proc: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self, argv: list[str], env: dict[str, str], cwd: Path) -> float:
        """Start ``argv``; the seconds until ``/health`` answers 200 (bounded)."""
        began = time.monotonic()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=pin_to(self.cpus),
            )  # fmt: skip
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() - began < START_TIMEOUT and self.proc.poll() is None:
                try:
                    if client.get("/health").status_code == 200:
                        return time.monotonic() - began
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{argv[2:4]} did not start:\n{self.tail()}")

    def stop(self) -> int | None:
        """SIGTERM to the group, wait, SIGKILL what is left; the leader's exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT}s: SIGKILL")
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@dataclass
class DevStack(Process):
    """``session-service dev`` on free ports; ``env`` adds settings (e.g.
    ``VECTOR_INDEX_MIN_POINTS``) to the environment it starts with; ``cpus`` pins it."""

    data_dir: Path
    code_dir: Path
    logfile: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    cpus: Cpus = None

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def dsn(self) -> str:
        """The embedded Postgres's DSN (the same socket-dir rule as ``dev``)."""
        from session_service.cli.embedded_stack import EmbeddedPostgres

        pg = EmbeddedPostgres(self.data_dir)
        pg.socket_dir = pg._choose_socket_dir()
        return pg.dsn

    def start(self) -> float:
        """Start it; the seconds until ``/health`` answers 200."""
        argv = [sys.executable, "-m", "session_service.cli.main", "dev", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir), "--temporal-port", str(self.temporal_port)]
        argv += ["--temporal-ui-port", str(free_port())]
        env = child_env({"PYTHONPATH": str(self.code_dir), **self.env})
        return self.launch(argv, env, self.code_dir)


class Server(Process):
    """``python -m <module> --port P`` from the repo: the in-memory app of ``bench.api``."""

    def __init__(self, module: str, logfile: Path, cpus: Cpus = None) -> None:
        self.module, self.port, self.logfile, self.cpus = module, free_port(), logfile, cpus
        self.proc = None

    def start(self) -> float:
        argv = [sys.executable, "-m", self.module, "--port", str(self.port)]
        return self.launch(argv, child_env(), REPO)


# the HTTP API


class Api:
    """The calls the benchmarks make, on one keep-alive connection."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=WAIT + 60)

    def close(self) -> None:
        self.http.close()

    def create_session(self, name: str, dim: int | None = None) -> str:
        body: dict[str, Any] = {"name": name}
        if dim is not None:
            body["configuration"] = {"vector_size": dim}
        r = self.http.post("/sessions", json=body)
        r.raise_for_status()
        return str(r.json()["id"])

    def put_points(self, session_id: str, points: list[dict[str, Any]]) -> None:
        r = self.http.put(f"/sessions/{session_id}/points", json={"points": points})
        r.raise_for_status()

    def count(self, session_id: str) -> int:
        r = self.http.get(f"/sessions/{session_id}/collection")
        r.raise_for_status()
        return int(r.json()["points_count"])

    def long(self, path: str, body: dict[str, Any] | None = None) -> tuple[dict[str, Any], float]:
        """POST a long-running operation with ``Prefer: wait=300``: its final body (200)
        and the client's seconds to that answer; a 202 is polled to the end."""
        began = time.perf_counter()
        r = self.http.post(path, json=body or {}, headers={"Prefer": f"wait={WAIT}"})
        seconds = time.perf_counter() - began
        if r.status_code == 202:
            op = self.operation(r.headers["Operation-Id"], wait=True)
            raise RuntimeError(f"{path} took over {WAIT}s: {op}")
        if r.status_code != 200:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:500]}")
        body_out: dict[str, Any] = r.json()
        body_out["_operation_id"] = r.headers.get("Operation-Id")
        return body_out, seconds

    def operation(self, op_id: str, *, wait: bool = False) -> dict[str, Any]:
        headers = {"Prefer": f"wait={WAIT}"} if wait else {}
        r = self.http.get(f"/operations/{op_id}", headers=headers)
        r.raise_for_status()
        op: dict[str, Any] = r.json()
        return op

    def query(self, session_id: str, vector: list[float], limit: int = 10) -> list[Any]:
        body = {"vector": vector, "limit": limit, "with_payload": False}
        r = self.http.post(f"/sessions/{session_id}/points/query", json=body)
        r.raise_for_status()
        return [p["id"] for p in r.json()["points"]]


def measured_operation(
    api: Api, dev: DevStack, name: str, path: str, body: dict[str, Any], points: int,
    spy: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """POST one long-running operation and wait for its answer, with the dev process's
    memory (from its idle median just before) and the CPU sampled; ``spy``: py-spy too."""
    log(f"{name}: POST {path}")
    with (
        MemorySampler(dev.pid, baseline=idle_memory(dev.pid)) as sampler,
        CpuWindow(contender=dev.pid) as cpu,
        PySpy(dev.pid, spy) if spy else contextlib.nullcontext() as profiler,
    ):
        answer, seconds = api.long(path, body)
        window = cpu.read()
    op_id = answer["_operation_id"]
    out: dict[str, Any] = {
        "name": name,
        "answer": answer,
        "operation_id": op_id,
        "seconds": seconds,
        "points_per_s": points / seconds,
        "server_s": server_seconds(api.operation(op_id)),
        "memory": sampler.report(),
        "cpu": window,
        "history": activity_seconds(dev.temporal_address, op_id),
    }
    if isinstance(profiler, PySpy):
        out["profile"] = profiler.summary()
    log(f"{name}: {out['points_per_s']:,.0f} points/s, other load {window['other_cores']}")
    return out


def server_seconds(op: dict[str, Any]) -> float:
    """An operation's own run time: ``finished_at - created_at``."""
    began = datetime.fromisoformat(op["created_at"])
    return (datetime.fromisoformat(op["finished_at"]) - began).total_seconds()


# Temporal


def _time(event: Any) -> datetime:
    value: datetime = event.event_time.ToDatetime()
    return value


async def _history(address: str, workflow_id: str) -> list[Any]:
    client = await Client.connect(address)
    return [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]


def activity_seconds(address: str, workflow_id: str) -> dict[str, Any]:
    """Seconds per activity type (started to completed, summed) and the workflow's run
    time, from its history: how much of an operation is its steps, how much the rest."""
    events = asyncio.run(_history(address, workflow_id))
    started: dict[int, datetime] = {}
    names: dict[int, str] = {}
    out: dict[str, float] = {}
    calls: dict[str, int] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[e.activity_task_started_event_attributes.scheduled_event_id] = _time(e)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            name = names[sid]
            out[name] = out.get(name, 0.0) + (_time(e) - started[sid]).total_seconds()
            calls[name] = calls.get(name, 0) + 1
    return {
        "workflow_s": round((_time(events[-1]) - _time(events[0])).total_seconds(), 3),
        "activities_s": {k: round(v, 3) for k, v in out.items()},
        "activity_calls": calls,
    }


async def _result(address: str, workflow_id: str, timeout: float) -> Any:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout
    while True:  # the child may not be started yet when its parent has answered
        try:
            return await asyncio.wait_for(handle.result(), timeout)
        except Exception as exc:  # noqa: BLE001 - "not found" until it starts
            if "not found" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def workflow_result(address: str, workflow_id: str, timeout: float = 3600.0) -> Any:
    """Wait for a workflow (e.g. ``index-<op id>``) to close; its result as JSON."""
    return asyncio.run(_result(address, workflow_id, timeout))


async def _start_index(
    address: str, workflow_id: str, collections: Sequence[str], session_ids: Sequence[str]
) -> Any:
    from temporalio.contrib.pydantic import pydantic_data_converter

    from session_service.temporal import registry
    from session_service.temporal.contracts import IndexInput, IndexResult

    client = await Client.connect(address, data_converter=pydantic_data_converter)
    return await client.execute_workflow(
        registry.INDEX.name,
        IndexInput(collections=list(collections), session_ids=list(session_ids)),
        id=workflow_id,
        task_queue="session-service",
        result_type=IndexResult,
    )


def run_index_workflow(
    address: str, workflow_id: str, collections: Sequence[str], session_ids: Sequence[str]
) -> Any:
    """Run the service's own ``IndexWorkflow`` (what merge, split and import start)."""
    return asyncio.run(_start_index(address, workflow_id, collections, session_ids))
