"""Optional sampling profiles of the dev stack during a sweep (``--profile-seconds``).

py-spy (on PATH, or the binary named by ``PY_SPY``) samples the Python process
(API + Temporal worker) and ``perf`` the Temporal dev server; each only when the
tool is there, both bounded in time.
Their raw output is summarised into where the samples fall.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

# Inclusive buckets for the Python process: the first pattern found in a stack wins.
PY_BUCKETS: list[tuple[str, str]] = [
    ("workflow sandbox (new workflow instance, imports)", "workflow_sandbox"),
    ("workflow activations (run workflow code)", "_workflow_instance"),
    ("activity: drop_collection / Qdrant local", "qdrant"),
    ("activity: Postgres (asyncpg)", "asyncpg"),
    ("activities (other)", "session_service/activities"),
    ("payload conversion (pydantic / json)", "converter"),
    ("HTTP API (uvicorn / fastapi)", "uvicorn"),
    ("temporal worker plumbing (temporalio/worker)", "temporalio/worker"),
    ("asyncio event loop", "asyncio"),
]


def _tool(name: str, extra: list[str]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def service_pid(leader: int) -> int:
    """The Python process: ``cli dev`` runs the API and the worker in the leader itself."""
    return leader


def temporal_pid(leader: int) -> int | None:
    for child in psutil.Process(leader).children(recursive=True):
        try:
            if "temporal" in child.name():
                return child.pid
        except psutil.Error:
            continue
    return None


def summarise_pyspy(raw: str, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks ("a;b;c count" per line) -> buckets and top frames."""
    total = 0
    buckets: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for label, pattern in PY_BUCKETS:
            if pattern in stack:
                buckets[label] += count
                break
        else:
            buckets["other"] += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "buckets_pct": {k: pct(v) for k, v in buckets.most_common()},
        "top_self_pct": {k: pct(v) for k, v in leaf.most_common(top)},
        "top_inclusive_pct": {
            k: pct(v) for k, v in inclusive.most_common(top * 3) if "<module>" not in k
        },
    }


async def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "timed out"
    return proc.returncode or 0, out.decode(errors="replace")


async def pyspy(pid: int, seconds: float, out_dir: Path) -> dict[str, Any]:
    exe = _tool("py-spy", [os.environ.get("PY_SPY", "")])
    if exe is None:
        return {"skipped": "py-spy not found"}
    raw = out_dir / "retention-pyspy.txt"
    code, text = await _run(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--nolineno",
            "--nonblocking",
            "--output",
            str(raw),
        ],
        timeout=seconds + 60,
    )
    if code != 0 or not raw.exists():
        return {"skipped": f"py-spy failed ({code}): {text[-500:]}"}
    return {"tool": exe, "seconds": seconds, **summarise_pyspy(raw.read_text())}


async def perf(pid: int, seconds: float, out_dir: Path, top: int = 20) -> dict[str, Any]:
    exe = _tool("perf", [])
    if exe is None:
        return {"skipped": "perf not found"}
    data = out_dir / "retention-perf.data"
    code, text = await _run(
        [exe, "record", "-F", "199", "-g", "-p", str(pid), "-o", str(data), "--", "sleep"]
        + [str(int(seconds))],
        timeout=seconds + 60,
    )
    if code != 0 or not data.exists():
        return {"skipped": f"perf record failed ({code}): {text[-500:]}"}
    reports: dict[str, list[str]] = {}
    for sort in ("dso", "sym"):
        code, report = await _run(
            [exe, "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort]
            + ["--percent-limit", "0.5", "-g", "none"],
            timeout=120,
        )
        rows: list[str] = []
        for line in report.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "%" in line:
                rows.append(" ".join(line.split()))
            if len(rows) >= top:
                break
        reports[sort] = rows
    data.unlink(missing_ok=True)
    return {
        "tool": exe,
        "seconds": seconds,
        "top_dso_self": reports["dso"],
        "top_symbols_self": reports["sym"],
    }


async def profile_window(
    leader: int, delay: float, seconds: float, out_dir: Path
) -> dict[str, Any]:
    """After ``delay`` s, sample both processes for ``seconds`` s, at the same time."""
    await asyncio.sleep(delay)
    out_dir.mkdir(parents=True, exist_ok=True)
    tpid = temporal_pid(leader)
    jobs = [pyspy(service_pid(leader), seconds, out_dir)]
    if tpid is not None:
        jobs.append(perf(tpid, seconds, out_dir))
    results = await asyncio.gather(*jobs)
    return {
        "started_after_s": delay,
        "python_service": results[0],
        "temporal_server": results[1] if len(results) > 1 else {"skipped": "no temporal pid"},
    }
