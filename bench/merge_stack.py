"""Process helpers of ``bench.merge``: the dev stack, RSS sampling, CPU accounting.

Everything runs on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
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

from session_service.embedded import free_port

MB = 1024 * 1024
START_TIMEOUT = 600.0  # a restart loads every stored point into RAM before /health answers
STOP_TIMEOUT = 120.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without anything that would replace a part of the embedded stack."""
    drop = {"DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST", "SESSION_API_KEYS"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env.update(extra or {})
    return env


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip()


def snapshot_code(repo: Path, dest: Path) -> dict[str, Any]:
    """Copy ``session_service/`` as it is now into ``dest`` (put first on PYTHONPATH).

    Others edit the tree while this runs, and Temporal's workflow sandbox re-reads
    workflow modules from disk for every new run: without a copy, one benchmark
    could mix two versions of the code.
    """
    shutil.copytree(
        repo / "session_service",
        dest / "session_service",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    digest = hashlib.sha256()
    for path in sorted((dest / "session_service").rglob("*")):
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


class DevStack:
    """``session-service dev`` on free ports, leader of its own process group."""

    def __init__(self, data_dir: Path, logfile: Path, env: dict[str, str]) -> None:
        self.data_dir, self.logfile, self.env = data_dir, logfile, env
        self.port = free_port()
        self.temporal_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
                time.sleep(0.1)
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
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
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


def rss_parts(pid: int) -> dict[str, int]:
    """RssAnon and RssFile of ``/proc/<pid>/status``, in bytes (0 if unreadable)."""
    parts = {"RssAnon": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in parts:
                    parts[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return parts


TRIM_HOOK = '''"""Written by bench.merge into its work dir; not part of the service.

With BENCH_MERGE_TRIM_DIR set, SIGUSR2 makes this process collect garbage and hand
its free heap pages back to the OS (glibc malloc_trim(0)), then note RSS before/after.
"""
import ctypes
import gc
import os
import signal


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim(signum, frame):
    before = _rss()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    path = os.path.join(os.environ["BENCH_MERGE_TRIM_DIR"], "trim-%d" % os.getpid())
    with open(path + ".tmp", "w") as f:
        f.write("%d %d" % (before, _rss()))
    os.replace(path + ".tmp", path)


if os.environ.get("BENCH_MERGE_TRIM_DIR"):
    signal.signal(signal.SIGUSR2, _trim)
'''


def install_trim_hook(src: Path, trim_dir: Path) -> dict[str, str]:
    """A ``sitecustomize`` in the dev stack's PYTHONPATH dir; the env that arms it."""
    (src / "sitecustomize.py").write_text(TRIM_HOOK)
    trim_dir.mkdir(parents=True, exist_ok=True)
    return {"BENCH_MERGE_TRIM_DIR": str(trim_dir)}


def trim_heap(pid: int, trim_dir: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Make the dev process hand its free heap pages back (``malloc_trim(0)``).

    qdrant-client's local mode reads every stored row of a folder at once when it
    opens it (``fetchall``), then frees them: hundreds of MB that stay in RSS as
    free heap until glibc happens to trim. A copy then grows into those holes
    without raising RSS - or RSS drops mid-copy when glibc trims: either way,
    growth from such a baseline says little. The children call ``malloc_trim(0)``
    themselves; the dev process does it on SIGUSR2, through ``install_trim_hook``.
    """
    note = trim_dir / f"trim-{pid}"
    note.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if note.exists():
            before, after = (int(x) for x in note.read_text().split())
            return {"trimmed": True, "rss_before_mb": before / MB, "rss_after_mb": after / MB}
        time.sleep(0.1)
    return {"trimmed": False, "why": f"no answer to SIGUSR2 in {timeout:.0f}s"}


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
    """Samples one process's RSS every ``interval`` s on a thread, keeping the peak."""

    pid: int
    interval: float = 0.05
    peak: int = 0
    peak_anon: int = 0
    samples: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)  # one point a second
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
        while not self._stop.is_set():
            try:
                value = int(process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, value)
            self.peak_anon = max(self.peak_anon, rss_parts(self.pid)["RssAnon"])
            self.samples += 1
            elapsed = time.monotonic() - began
            if elapsed >= next_point:
                self.series.append((round(elapsed, 2), value))
                next_point += 1.0
            self._stop.wait(self.interval)


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process and of each kind of its descendants."""
    out: dict[str, float] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            name = "python" if proc.pid == pid else proc.name()
        except psutil.Error:
            continue
        out[name] = out.get(name, 0.0) + times.user + times.system
    return out


@dataclass
class CpuWindow:
    """CPU used by one process tree and by the whole machine over a window, in cores."""

    pid: int
    _began: float = 0.0
    _tree: dict[str, float] = field(default_factory=dict)
    _machine: Any = None

    def __enter__(self) -> CpuWindow:
        self._began = time.monotonic()
        self._tree = tree_cpu(self.pid)
        self._machine = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def read(self) -> dict[str, Any]:
        """Cores used since the start: by each kind of process in the tree, by all, by others."""
        seconds = time.monotonic() - self._began
        now = tree_cpu(self.pid)
        tree = {k: (v - self._tree.get(k, 0.0)) / seconds for k, v in now.items()}
        machine = psutil.cpu_times()
        idle = ("idle", "iowait", "steal", "guest", "guest_nice")
        busy = sum(
            getattr(machine, f) - getattr(self._machine, f)
            for f in machine._fields
            if f not in idle
        )

        def delta(name: str) -> float:
            return float(getattr(machine, name, 0.0) - getattr(self._machine, name, 0.0))

        total_tree = sum(tree.values())
        return {
            "window_s": round(seconds, 3),
            "python_cpu_s": round(tree.get("python", 0.0) * seconds, 2),
            "tree_cpu_s": round(total_tree * seconds, 2),
            "tree_cores": {k: round(v, 3) for k, v in tree.items() if v >= 0.0005},
            "tree_total_cores": round(total_tree, 3),
            "machine_busy_cores": round(busy / seconds, 3),
            "other_cores": round(max(busy / seconds - total_tree, 0.0), 3),
            "iowait_cores": round(delta("iowait") / seconds, 3),
            "steal_cores": round(delta("steal") / seconds, 3),
        }


def wait_quiet(limit: float = 0.15, timeout: float = 60.0) -> float:
    """Wait (bounded) until the machine is nearly idle; the busy fraction last seen."""
    deadline = time.monotonic() + timeout
    busy = psutil.cpu_percent(interval=1.0) / 100
    while busy > limit and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0) / 100
    if busy > limit:
        log(f"the machine is still {busy:.0%} busy with other work: numbers will be noisy")
    return busy
