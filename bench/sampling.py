"""What the benchmarks measure beside time: memory of a process, CPU of ours against
everyone else's, and (optionally) where a process spends its time.

- :class:`MemorySampler` reads ``/proc/<pid>/status`` every ``interval`` s on a thread
  and keeps the peaks of ``VmRSS`` and ``RssAnon`` over a baseline. ``RssAnon`` is the
  heap and stacks alone: Edge keeps points in memory-mapped files, whose pages count in
  ``RssFile`` (page cache, reclaimable), so anonymous growth is the cost that matters.
- :class:`CpuWindow` splits the machine's busy time (``/proc/stat``) over a window into
  this benchmark's process tree (the orchestrator, the dev stack, the raw children) and
  the rest: the other engineers' load, which makes absolute figures drift.
- :class:`PySpy` samples a process from outside (``py-spy record --nonblocking``) when
  py-spy is installed; it is a diagnostic, never on the runs whose figures are kept.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def memory(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of ``/proc/<pid>/status``, in bytes."""
    out = dict.fromkeys(_FIELDS, 0)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1]) * 1024
    return out


def trim_heap() -> None:
    """Collect garbage and hand free heap pages back (glibc ``malloc_trim``): a baseline
    taken after it is not inflated by what set-up freed."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def idle_memory(pid: int, seconds: float = 1.0, interval: float = 0.05) -> dict[str, int]:
    """The median of each field over ``seconds`` of an idle process: a growth's baseline."""
    samples: dict[str, list[int]] = {k: [] for k in _FIELDS}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for k, v in memory(pid).items():
            samples[k].append(v)
        time.sleep(interval)
    return {k: sorted(v)[len(v) // 2] for k, v in samples.items()}


@dataclass
class MemorySampler:
    """Peaks of one process's memory while the ``with`` block runs, over ``baseline``
    (taken on entry when not given), with one point a second for the JSON results."""

    pid: int
    interval: float = 0.05
    baseline: dict[str, int] | None = None
    peak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_FIELDS, 0))
    samples: int = 0
    series: list[tuple[float, int, int]] = field(default_factory=list)  # s, RSS MB, anon MB
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        if self.baseline is None:
            self.baseline = memory(self.pid)
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        began = time.monotonic()
        next_point = 0.0
        while not self._stop.is_set():
            try:
                now = memory(self.pid)
            except OSError:
                return
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)
            self.samples += 1
            elapsed = time.monotonic() - began
            if elapsed >= next_point:
                self.series.append((round(elapsed, 2), now["VmRSS"] // MB, now["RssAnon"] // MB))
                next_point += 1.0
            self._stop.wait(self.interval)

    def report(self) -> dict[str, Any]:
        base = self.baseline or {}
        return {
            "rss_base_mb": round(base.get("VmRSS", 0) / MB, 1),
            "anon_base_mb": round(base.get("RssAnon", 0) / MB, 1),
            "rss_growth_mb": round((self.peak["VmRSS"] - base.get("VmRSS", 0)) / MB, 1),
            "anon_growth_mb": round((self.peak["RssAnon"] - base.get("RssAnon", 0)) / MB, 1),
            "file_growth_mb": round((self.peak["RssFile"] - base.get("RssFile", 0)) / MB, 1),
            "samples": self.samples,
            "series": self.series,
        }


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, each with its reaped children
    (so a child that ended inside a window is still counted, once, by its parent)."""
    total = 0.0
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


@dataclass
class CpuWindow:
    """Cores used over a window: by the machine, by our process tree (``ours``, by
    default this process and everything it started), by ``contender``'s tree, and by
    other processes (busy minus ours)."""

    contender: int | None = None
    ours: int = field(default_factory=os.getpid)
    _began: float = 0.0
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float]:
        mine = _tree_cpu(self.contender) if self.contender else 0.0
        return _machine_busy(), _tree_cpu(self.ours), mine

    def __enter__(self) -> CpuWindow:
        self._began, self._start = time.monotonic(), self._now()
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def read(self) -> dict[str, float]:
        seconds = max(time.monotonic() - self._began, 1e-9)
        busy, ours, mine = (b - a for a, b in zip(self._start, self._now(), strict=True))
        return {
            "window_s": round(seconds, 2),
            "machine_cores": round(busy / seconds, 2),
            "ours_cores": round(ours / seconds, 2),
            "contender_cores": round(mine / seconds, 2),
            "other_cores": round(max(busy - ours, 0.0) / seconds, 2),
        }


def other_load(seconds: float = 2.0) -> float:
    """Cores used by processes outside our tree over ``seconds`` (a snapshot)."""
    with CpuWindow() as window:
        time.sleep(seconds)
    return window.read()["other_cores"]


# profiling (diagnostics only)

PYSPY_RATE = 50


class PySpy:
    """``py-spy record`` on one pid for the ``with`` block (SIGINT makes it write), when
    py-spy is installed (``.venv/bin/pip install py-spy``); a no-op otherwise."""

    def __init__(self, pid: int, out: Path, *, subprocesses: bool = False) -> None:
        self.pid, self.out, self.subprocesses = pid, out, subprocesses
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def path() -> str | None:
        here = Path(sys.executable).parent / "py-spy"
        return str(here) if here.exists() else shutil.which("py-spy")

    def __enter__(self) -> PySpy:
        exe = self.path()
        if exe is None:
            return self
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(PYSPY_RATE)]
        argv += ["--format", "raw", "--nonblocking", "--threads", "--output", str(self.out)]
        if self.subprocesses:
            argv.append("--subprocesses")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before the work starts
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def summary(self, top: int = 15) -> dict[str, Any]:
        if self.proc is None:
            return {"skipped": "py-spy not installed"}
        if not self.out.exists():
            return {"skipped": "py-spy wrote nothing"}
        return summarise(self.out.read_text(errors="replace"), top)


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks: share of samples per thread, top leaf and inclusive frames."""
    total = 0
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "?")
        kind = re.sub(r"_\d+\)?$", "", thread.split(": ", 1)[-1].strip('"'))
        body = [f for f in frames if not f.startswith(("thread ", "process "))]
        total += count
        threads[kind] += count
        if body:
            leaf[body[-1]] += count
        for frame in set(body):
            inclusive[frame] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    skip = ("<module>", "_bootstrap", "run (threading", "_worker (", "run_forever", "run (asyncio")
    return {
        "samples": total,
        "threads_pct": {k: pct(v) for k, v in threads.most_common(8)},
        "top_self_pct": {k: pct(v) for k, v in leaf.most_common(top)},
        "top_inclusive_pct": {
            k: pct(v)
            for k, v in inclusive.most_common(top * 4)
            if not any(s in k for s in skip) and pct(v) >= 2.0
        },
    }
