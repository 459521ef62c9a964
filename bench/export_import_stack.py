"""Process helpers of ``bench.export_import``: the dev stack, RSS sampling, CPU windows,
machine facts and a frozen copy of the service code.

Everything runs on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

MB = 1024 * 1024
START_TIMEOUT = 900.0  # a start loads every stored point of the folder before /health answers
STOP_TIMEOUT = 180.0
# ports other engineers' benchmarks use: never ours even if free right now
RESERVED_PORTS = {18087, 17233, 18233, 28087, 27233, 28233}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free loopback port that is not one of the reserved ones."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def child_env(
    extra: dict[str, str] | None = None, pythonpath: Path | None = None
) -> dict[str, str]:
    """Our environment without anything that would replace a part of the embedded stack."""
    drop = {"DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST", "SESSION_API_KEYS"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.update(extra or {})
    return env


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


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip()


def snapshot_code(repo: Path, dest: Path) -> dict[str, Any]:
    """Copy ``session_service/`` as it is now into ``dest`` (the stack's cwd and PYTHONPATH).

    Others edit the tree while this runs, and Temporal's workflow sandbox re-reads
    workflow modules for every run: without a frozen copy one run could mix versions.
    """
    target = dest / "session_service"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        repo / "session_service", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode())
            digest.update(path.read_bytes())
    return {
        "git_head": _git(repo, "rev-parse", "HEAD"),
        "uncommitted_in_session_service": _git(
            repo, "status", "--porcelain", "--", "session_service"
        ).splitlines(),
        "snapshot_sha256": digest.hexdigest(),
    }


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@dataclass
class DevStack:
    """``session-service dev`` on free ports, leader of its own process group."""

    data_dir: Path
    code_dir: Path
    logfile: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "session_service.cli",
            "dev",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--temporal-port",
            str(self.temporal_port),
            "--temporal-ui-port",
            str(free_port()),
        ]

    def start(self) -> float:
        """Start it; the seconds until ``/health`` answers 200."""
        began = time.monotonic()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=self.code_dir,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() - began < START_TIMEOUT:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dev exited at start:\n{self.tail()}")
                if _healthy(client):
                    return time.monotonic() - began
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dev not healthy after {START_TIMEOUT}s:\n{self.tail()}")

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
                log(f"dev ignored SIGTERM for {STOP_TIMEOUT}s: SIGKILL")
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of our own group, if any
        return proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-chars:]


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def idle_rss(pid: int, seconds: float = 1.0, interval: float = 0.05) -> int:
    """The median RSS of an idle process over ``seconds``: the baseline of a growth."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss(pid))
        time.sleep(interval)
    return int(statistics.median(samples))


@dataclass
class RssSampler:
    """Samples one process's RSS every ``interval`` s on a thread, keeping the peak
    and one point a second for the JSON results.

    ``max_rise`` is the largest rise above the lowest RSS seen before it (starting from
    ``baseline``): when the allocator hands back memory freed before the measurement
    (the dev process returns ~1.3 GB left over from loading the folder at some point),
    ``peak - baseline`` understates what the operation itself added; ``max_rise`` does not.
    """

    pid: int
    baseline: int = 0
    interval: float = 0.05
    peak: int = 0
    max_rise: int = 0
    samples: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        process = psutil.Process(self.pid)
        began = time.monotonic()
        next_point = 0.0
        low = self.baseline or int(process.memory_info().rss)
        while not self._stop.is_set():
            try:
                value = int(process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, value)
            low = min(low, value)
            self.max_rise = max(self.max_rise, value - low)
            self.samples += 1
            elapsed = time.monotonic() - began
            if elapsed >= next_point:
                self.series.append((round(elapsed, 2), value // MB))
                next_point += 1.0
            self._stop.wait(self.interval)


@dataclass
class CpuWindow:
    """CPU seconds of one process (threads included) and of the machine over a window."""

    pid: int
    _began: float = 0.0
    _proc: float = 0.0
    _machine: Any = None

    def __enter__(self) -> CpuWindow:
        self._began = time.monotonic()
        self._proc = self._proc_cpu()
        self._machine = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def _proc_cpu(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def read(self) -> dict[str, float]:
        """Cores used since the start by the process, by the whole machine, by the rest."""
        seconds = max(time.monotonic() - self._began, 1e-9)
        try:
            own = (self._proc_cpu() - self._proc) / seconds
        except psutil.Error:
            own = float("nan")
        machine = psutil.cpu_times()
        skip = ("idle", "iowait", "guest", "guest_nice")
        busy = sum(
            getattr(machine, f) - getattr(self._machine, f)
            for f in machine._fields
            if f not in skip
        )
        return {
            "process_cores": round(own, 3),
            "machine_busy_cores": round(busy / seconds, 3),
            "other_cores": round(max(busy / seconds - own, 0.0), 3),
        }
