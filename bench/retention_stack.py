"""The dev stack of ``bench.retention``: one ``session-service dev`` process tree.

Started on free 127.0.0.1 ports with a short data dir (so the Postgres unix
socket lives in ``<dir>/postgres``), leader of its own process group, stopped
with SIGTERM to the group. Every wait is bounded.

The stack runs a copy of ``session_service`` taken when the benchmark starts
(``<dir>/src``): Temporal's workflow sandbox re-imports workflow modules for
every new run, so edits made to the working tree during a long benchmark would
otherwise change the code under test half-way through.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from session_service.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
RESERVED_PORTS = {18087, 17233, 18233, 28087, 27233, 28233}  # used by other benchmarks


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _port(taken: set[int]) -> int:
    for _ in range(100):
        port = free_port()
        if port not in RESERVED_PORTS and port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port found")


def child_env() -> dict[str, str]:
    """Our environment without anything that would replace a part of the embedded stack."""
    drop = {"DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_HOST", "SESSION_API_KEYS"}
    return {k: v for k, v in os.environ.items() if k.upper() not in drop}


class DevStack:
    """``python -m session_service.cli dev`` with Postgres, Temporal, Qdrant local and the API."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="ssret-", dir="/tmp"))
        taken: set[int] = set()
        self.port = _port(taken)
        self.temporal_port = _port(taken)
        self.ui_port = _port(taken)
        self.logfile = self.data_dir / "dev.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.source = self.data_dir / "src"
        shutil.copytree(
            REPO / "session_service",
            self.source / "session_service",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        self.source_digest = tree_digest(self.source / "session_service")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def dsn(self) -> str:
        socket_dir = self.data_dir / "postgres"
        if len(str(socket_dir / ".s.PGSQL.5432")) >= 100:
            raise RuntimeError(f"data dir {self.data_dir} is too long for a unix socket path")
        return f"postgresql://postgres@/postgres?host={socket_dir}&port=5432"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start it; the seconds until ``GET /health`` answers 200."""
        argv = [
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
            str(self.ui_port),
        ]
        began = time.monotonic()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env={**child_env(), "PYTHONPATH": str(self.source)},
                cwd=self.source,  # ``-m`` looks in the working directory first
                start_new_session=True,
            )
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() - began < START_TIMEOUT:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dev exited at start:\n{self.tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return time.monotonic() - began
                except httpx.HTTPError:
                    pass
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
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of our own group only
        return proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def cpu_seconds(self) -> dict[str, tuple[float, float]]:
        """(user, system) CPU seconds so far of the tree, by part: the Python API + worker
        process, the Temporal dev server, and Postgres (postmaster, live backends and the
        reaped ones)."""
        out: dict[str, tuple[float, float]] = {
            "service (python)": (0.0, 0.0),
            "temporal": (0.0, 0.0),
            "postgres": (0.0, 0.0),
        }
        root = psutil.Process(self.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                name = proc.name()
            except psutil.Error:
                continue
            user, system = t.user, t.system
            if proc.pid == self.pid:
                part = "service (python)"  # its reaped children are Postgres and Temporal
            elif "temporal" in name:
                part = "temporal"
            elif "postgres" in name or "postmaster" in name:
                part = "postgres"
                user, system = user + t.children_user, system + t.children_system
            else:
                part = name
            u0, s0 = out.get(part, (0.0, 0.0))
            out[part] = (u0 + user, s0 + system)
        return out


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every .py and .sql file."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in {".py", ".sql"}):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def source_facts() -> dict[str, object]:
    """The commit under test and whether ``session_service`` differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "commit_subject": git("log", "-1", "--format=%s"),
        "session_service_uncommitted_changes": git(
            "status", "--porcelain", "--", "session_service"
        ).splitlines(),
    }


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
