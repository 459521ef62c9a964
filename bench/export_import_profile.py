"""Where the dev process spends an export or an import: py-spy samples it (out of process,
``--nonblocking``) while the operation runs, and the collapsed stacks are summarised per
thread (event loop, the one ``qdrant`` executor thread, ``asyncio.to_thread`` workers),
by leaf frame and by inclusive frame. Only used with ``--profile``, on runs that are
not the measured ones.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

PYSPY_CANDIDATES = ("/tmp/pyspy-venv/bin/py-spy",)
RATE = 50
MAX_SECONDS = 3600


def pyspy_path() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    for candidate in PYSPY_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


class PySpy:
    """``py-spy record`` on one pid until :meth:`stop` (SIGINT makes it write its output)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        exe = pyspy_path()
        if exe is None:
            return self
        argv = [
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(RATE),
            "--duration",
            str(MAX_SECONDS),
            "--format",
            "raw",
            "--nolineno",
            "--nonblocking",
            "--threads",
            "--output",
            str(self.out),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    def summary(self, top: int = 20) -> dict[str, Any]:
        if self.proc is None:
            return {"skipped": "py-spy not found"}
        if not self.out.exists():
            return {"skipped": "py-spy wrote nothing"}
        return summarise(self.out.read_text(errors="replace"), top)


_THREAD = re.compile(r"^thread \(\d+\): ([^;]*);")


def _thread_kind(name: str) -> str:
    """``qdrant_0`` -> ``qdrant``; ``asyncio_3`` -> ``asyncio (to_thread)``."""
    base = re.sub(r"_\d+$", "", name)
    return "asyncio (to_thread)" if base == "asyncio" else base


def summarise(raw: str, top: int = 20) -> dict[str, Any]:
    """Collapsed stacks -> samples per thread kind, top leaf frames, top inclusive frames
    (each also per thread kind), as percentages of all samples."""
    total = 0
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        match = _THREAD.match(stack)
        kind = _thread_kind(match.group(1)) if match else "?"
        frames = stack.split(";")[1:] if match else stack.split(";")
        total += count
        threads[kind] += count
        if frames:
            leaf[f"{kind}: {frames[-1]}"] += count
        for frame in set(frames):
            inclusive[f"{kind}: {frame}"] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    skip = ("<module>", "_bootstrap", "Thread.run", "_worker (", "_WorkItem.run", "run_forever")
    return {
        "samples": total,
        "rate_hz": RATE,
        "threads_pct": {k: pct(v) for k, v in threads.most_common()},
        "top_self_pct": {k: pct(v) for k, v in leaf.most_common(top)},
        "top_inclusive_pct": {
            k: pct(v)
            for k, v in inclusive.most_common(top * 4)
            if not any(s in k for s in skip) and pct(v) >= 1.0
        },
    }
