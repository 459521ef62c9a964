"""Benchmark of ``POST /sessions/merge`` on the embedded stack, against the copy's floor.

The issue asks whether the durable merge (a Temporal workflow whose
``copy_points`` activity scrolls the sources in batches and upserts into the
target) costs too much next to what Qdrant itself allows, and whether it still
holds every point in RAM as the old in-memory merge did. Targets: the API
merge moves at least 0.8x the points per second of a bare scroll/upsert loop
on the same Qdrant, and the worker's RSS grows by less than 150 MB.

Two sessions of ``--points`` points (default 100,000) of ``--dim`` dimensions
(default 384), disjoint ids, are seeded through the API of ``session-service
dev``. Then three contenders copy the same two source collections into a new
collection, in the same Qdrant local-mode folder, with the same batch size
(``OP_BATCH_SIZE``, 1024) and the same persistence (qdrant-client local mode
writes every upserted point to SQLite):

* ``api merge``: ``POST /sessions/merge`` with ``Prefer: respond-async``,
  polled once a second on ``GET /operations/{id}``; its time is the
  operation's ``finished_at - created_at`` (the whole workflow: lock, count,
  create, copy, count, finish). The dev stack is restarted first, so that its
  Python process has just loaded the folder, like the other contenders.
* ``raw loop``: no API, no Temporal: a fresh process opens the folder with
  ``QdrantClient(path=...)`` and scrolls/upserts batch after batch (the floor),
  on one worker thread as the service's ``VectorStore`` does.
* ``in-memory``: a fresh process reads every point of both sources into one
  Python list, then upserts them all (the old way), batch by batch.

Local mode allows one client per folder, so the dev stack is stopped (SIGTERM
to its group) while the raw loop and the in-memory way run. The order is raw
loop, API merge (``--rounds`` times), raw loop again, in-memory: raw runs
bracket every API merge, so a drift of the machine (page cache, disk, other
work) shows up as a difference between them; the floor is their mean, and each
API merge is also compared with its two neighbours. Every contender runs in
a process that has just opened the folder, and each deletes its merged
collection afterwards, so each one starts from the same folder.

Peak RSS growth is sampled from outside every 50 ms: for the API merge, the dev
stack's Python process (API and worker share it, and the Qdrant client), from
just before the POST; for the others, their own process, from just after the
client opened the folder (opening loads every stored point: not the copy's
cost). Opening also leaves hundreds of MB of freed heap in RSS, which a copy
can grow into unseen (or glibc trims mid-copy and RSS drops below the
baseline), so every process first hands those pages back with glibc's
``malloc_trim(0)``: the children themselves, the dev process on SIGUSR2 through
a ``sitecustomize`` hook the benchmark writes into its work dir. In
local mode the new collection itself lives in the copying process's RAM, so
every contender grows by it; the API merge's own overhead is its growth minus
the raw loop's. Every merged collection must hold exactly the union of the
sources (2 x points). CPU seconds of each process are read too: the copy waits
on an fsync per point, so CPU per point is the steadier measure of overhead
when other work shares the machine.

The code measured is ``session_service/`` as it is when the run starts, copied
into the work dir and put first on the dev stack's PYTHONPATH (others edit the
tree meanwhile, and Temporal's sandbox re-reads workflow modules for every new
run); the git HEAD, the uncommitted files and a hash of the copy are recorded.

Also measured: the end-to-end latency of a small merge (2 x ``--small-points``
points) answered synchronously (no ``Prefer``: 200 with the new session), one
unmeasured warm-up then ``--small-runs`` runs, each on fresh sessions.

Run: ``.venv/bin/python -m bench.merge [--points N] [--dim D]``.
Writes Markdown to stdout, progress to stderr, raw numbers to bench/results/merge.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np

from bench.merge_history import summarize
from bench.merge_report import compare, markdown
from bench.merge_stack import (
    MB,
    CpuWindow,
    DevStack,
    RssSampler,
    child_env,
    idle_rss,
    install_trim_hook,
    log,
    rss_parts,
    snapshot_code,
    trim_heap,
    wait_quiet,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "merge.json"
UPSERT_CHUNK = 1000  # the API's limit per PUT
POLL_S = 1.0
OPEN_TIMEOUT = 900.0


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_before": os.getloadavg(),
    }


def copy_timeout(points: int) -> float:
    """A bound for one copy of ``points``: generous (50 points/s), but a bound."""
    return 300.0 + points / 50


# the API


def create_session(client: httpx.Client, name: str, dim: int) -> dict[str, Any]:
    r = client.post("/sessions", json={"name": name, "configuration": {"vector_size": dim}})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def random_points(rng: np.random.Generator, first: int, n: int, dim: int) -> list[Any]:
    vectors = np.round(rng.standard_normal((n, dim), dtype=np.float32), 5).tolist()
    return [
        {"id": first + i, "vector": v, "payload": {"n": first + i, "url": f"https://e.x/{i}"}}
        for i, v in enumerate(vectors)
    ]


def seed(
    client: httpx.Client, session_id: str, first: int, n: int, dim: int, rng: np.random.Generator
) -> float:
    """PUT ``n`` points, ``first`` and on, 1,000 a call; the seconds it took."""
    began = time.monotonic()
    for start in range(0, n, UPSERT_CHUNK):
        points = random_points(rng, first + start, min(UPSERT_CHUNK, n - start), dim)
        r = client.put(f"/sessions/{session_id}/points", json={"points": points})
        r.raise_for_status()
        done = start + len(points)
        if done % 10_000 == 0 or done == n:
            rate = done / (time.monotonic() - began)
            log(f"  seeded {done}/{n} points into {session_id[:8]}, {rate:.0f}/s")
    return time.monotonic() - began


def collection_count(client: httpx.Client, session_id: str) -> int:
    r = client.get(f"/sessions/{session_id}/collection")
    r.raise_for_status()
    return int(r.json()["points_count"])


def poll_operation(client: httpx.Client, op_id: str, timeout: float) -> dict[str, Any]:
    """GET the operation once a second until it is done; log its progress now and then."""
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while time.monotonic() < deadline:
        r = client.get(f"/operations/{op_id}")
        r.raise_for_status()
        op: dict[str, Any] = r.json()
        if op["done"]:
            return op
        if time.monotonic() - last_log >= 15:
            last_log = time.monotonic()
            p = op.get("progress") or {}
            done, total = p.get("points_done"), p.get("points_total")
            log(f"  operation {op_id}: {p.get('phase')} {done}/{total}")
        time.sleep(POLL_S)
    raise TimeoutError(f"operation {op_id} not done after {timeout:.0f}s")


def delete_permanently(client: httpx.Client, session_id: str, timeout: float) -> None:
    r = client.delete(f"/sessions/{session_id}", params={"permanent": "true"})
    if r.status_code == 202:
        op = poll_operation(client, r.json()["id"], timeout)
        if op["status"] != "succeeded":
            raise RuntimeError(f"deleting {session_id}: {op}")
    else:
        r.raise_for_status()


def server_seconds(op: dict[str, Any]) -> float:
    began = datetime.fromisoformat(op["created_at"])
    ended = datetime.fromisoformat(op["finished_at"])
    return (ended - began).total_seconds()


def small_merge(client: httpx.Client, n: int, dim: int, rng: np.random.Generator) -> dict[str, Any]:
    """Two fresh sessions of ``n`` points merged without ``Prefer``: one timed request."""
    ids = []
    for k in range(2):
        s = create_session(client, f"small-{k}", dim)
        points = random_points(rng, k * n, n, dim)
        r = client.put(f"/sessions/{s['id']}/points", json={"points": points})
        r.raise_for_status()
        ids.append(s["id"])
    began = time.perf_counter()
    r = client.post("/sessions/merge", json={"source_session_ids": ids})
    seconds = time.perf_counter() - began
    if r.status_code not in (200, 202):
        raise RuntimeError(f"small merge answered {r.status_code}: {r.text[:500]}")
    op_id = r.headers["Operation-Id"]
    op = poll_operation(client, op_id, 600)  # a 202 (over the sync wait) still gets checked
    count = collection_count(client, op["result"]["id"]) if op["status"] == "succeeded" else 0
    return {
        "ms": seconds * 1000,
        "status_code": r.status_code,
        "server_ms": server_seconds(op) * 1000,
        "count": count,
        "ok": r.status_code == 200 and count == 2 * n,
    }


def small_merges(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 1)
    warmup = small_merge(client, args.small_points, args.dim, rng)
    runs = [small_merge(client, args.small_points, args.dim, rng) for _ in range(args.small_runs)]
    ms = sorted(r["ms"] for r in runs)
    p90 = float(np.percentile(ms, 90)) if ms else 0.0
    log(
        f"small merge 2x{args.small_points}: warm-up {warmup['ms']:.0f} ms, median "
        f"{statistics.median(ms):.0f} ms, p90 {p90:.0f} ms over {len(ms)} runs"
    )
    return {
        "points_per_source": args.small_points,
        "warmup": warmup,
        "runs": runs,
        "median_ms": statistics.median(ms),
        "p90_ms": p90,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "median_server_ms": statistics.median(r["server_ms"] for r in runs),
        "ok": warmup["ok"] and all(r["ok"] for r in runs),
    }


def timeline(dev: DevStack, op_id: str) -> dict[str, Any]:
    """Where the workflow's time went (diagnostic only: never fails the run)."""
    try:
        return summarize(f"127.0.0.1:{dev.temporal_port}", op_id)
    except Exception as exc:  # noqa: BLE001
        log(f"could not read the history of {op_id}: {exc}")
        return {"error": str(exc)}


def api_merge(
    dev: DevStack, source_ids: list[str], args: argparse.Namespace, trim_dir: Path, name: str
) -> dict[str, Any]:
    """The timed merge through the API, with the dev Python process's RSS sampled."""
    expected = 2 * args.points
    with httpx.Client(base_url=dev.url, timeout=60) as client:
        trim = trim_heap(dev.pid, trim_dir) if args.trim else {"trimmed": False}
        log(f"dev process heap trimmed before the baseline: {trim}")
        quiet = wait_quiet()
        base, base_anon = idle_rss(dev.pid), rss_parts(dev.pid)["RssAnon"]
        with RssSampler(dev.pid, args.sample_interval) as sampler, CpuWindow(dev.pid) as cpu:
            began = time.monotonic()
            r = client.post(
                "/sessions/merge",
                json={"source_session_ids": source_ids},
                headers={"Prefer": "respond-async"},
            )
            if r.status_code != 202:
                raise RuntimeError(f"merge answered {r.status_code}: {r.text[:500]}")
            op = poll_operation(client, r.json()["id"], copy_timeout(expected))
            wall = time.monotonic() - began
            cpu_used = cpu.read()
        if op["status"] != "succeeded":
            raise RuntimeError(f"merge ended {op['status']}: {op.get('error')}")
        history = timeline(dev, op["id"])
        merged_id = op["result"]["id"]
        count = collection_count(client, merged_id)
        delete_permanently(client, merged_id, copy_timeout(expected))
    seconds = server_seconds(op)
    return {
        "name": name,
        "seconds": seconds,
        "client_wall_s": wall,
        "points_per_s": expected / seconds,
        "count": count,
        "ok": count == expected,
        "rss_base_mb": base / MB,
        "rss_peak_mb": sampler.peak / MB,
        "rss_growth_mb": (sampler.peak - base) / MB,
        "anon_growth_mb": (sampler.peak_anon - base_anon) / MB,
        "heap_trim": trim,
        "rss_samples": sampler.samples,
        "rss_series": sampler.series,
        "cpu": cpu_used,
        "quiet_before": quiet,
        "operation": {k: op.get(k) for k in ("id", "created_at", "finished_at", "progress")},
        "history": history,
    }


# the contenders without the API, each in a process of its own


def _reader(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def next_event(lines: queue.Queue[str], proc: subprocess.Popen[str], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(lines.get(timeout=1.0))
        except queue.Empty:
            if proc.poll() is not None and lines.empty():
                raise RuntimeError(f"copy process exited with {proc.returncode}") from None
    raise TimeoutError(f"no answer from the copy process in {timeout:.0f}s")


def expect(lines: queue.Queue[str], proc: subprocess.Popen[str], name: str, t: float) -> Any:
    event = next_event(lines, proc, t)
    if event.get("event") != name:
        raise RuntimeError(f"expected {name!r} from the copy process, got {event}")
    return event


def copy_argv(mode: str, qdrant: Path, sources: list[str], args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.merge_copy",
        f"--path={qdrant}",
        f"--mode={mode}",
        *(f"--source={s}" for s in sources),
        f"--target=bench_merge_{mode}",
        f"--batch-size={args.batch_size}",
        f"--progress-every={max(args.points // 5, 1)}",
    ]


def run_copy(
    name: str, mode: str, qdrant: Path, sources: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """One contender in a fresh process: open, idle baseline, go, copy, check, clean up."""
    expected = 2 * args.points
    log(f"{name}: opening {qdrant} in a fresh process")
    proc = subprocess.Popen(
        copy_argv(mode, qdrant, sources, args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        opened = expect(lines, proc, "opened", OPEN_TIMEOUT)
        log(f"{name}: opened {opened['points_loaded']} points in {opened['open_s']:.1f} s")
        quiet = wait_quiet()
        base, base_anon = idle_rss(proc.pid), rss_parts(proc.pid)["RssAnon"]
        with RssSampler(proc.pid, args.sample_interval) as sampler, CpuWindow(proc.pid) as cpu:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            copied = expect(lines, proc, "copied", copy_timeout(expected))
            cpu_used = cpu.read()
        expect(lines, proc, "closed", copy_timeout(expected))
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return {
        "name": name,
        "seconds": copied["seconds"],
        "points_per_s": expected / copied["seconds"],
        "count": copied["count"],
        "read": copied["read"],
        "ok": copied["count"] == expected and copied["read"] == expected,
        "copy_cpu_s": copied["cpu_s"],
        "open_s": opened["open_s"],
        "points_loaded_at_open": opened["points_loaded"],
        "rss_base_mb": base / MB,
        "rss_peak_mb": sampler.peak / MB,
        "rss_growth_mb": (sampler.peak - base) / MB,
        "anon_growth_mb": (sampler.peak_anon - base_anon) / MB,
        "heap_trim": {"trimmed": opened["trimmed"]},
        "rss_samples": sampler.samples,
        "rss_series": sampler.series,
        "cpu": cpu_used,
        "quiet_before": quiet,
        "exit_code": proc.returncode,
    }


def announce(result: dict[str, Any]) -> None:
    log(
        f"{result['name']}: {result['count']} points in {result['seconds']:.1f} s = "
        f"{result['points_per_s']:.0f} points/s, peak RSS growth {result['rss_growth_mb']:.0f} MB, "
        f"count {'ok' if result['ok'] else 'WRONG'}"
    )


# the run


def seed_sources(dev: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    sources: list[dict[str, Any]] = []
    with httpx.Client(base_url=dev.url, timeout=120) as client:
        for k, label in enumerate("ab"):
            s = create_session(client, f"merge-bench-{label}", args.dim)
            seconds = seed(client, s["id"], k * args.points, args.points, args.dim, rng)
            count = collection_count(client, s["id"])
            if count != args.points:
                raise RuntimeError(f"source {label} holds {count} points, not {args.points}")
            sources.append(
                {"id": s["id"], "collection": s["qdrant_collection_name"], "seed_s": seconds}
            )
        small = small_merges(client, args)
    return {"sources": sources, "small_merge": small}


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data_dir, logdir = workdir / "d", workdir / "logs"
    logdir.mkdir()
    qdrant = data_dir / "qdrant"
    code = snapshot_code(REPO, workdir / "src")
    log(f"benchmarking session_service as copied now: {code}")
    pythonpath = os.pathsep.join(
        p for p in (str(workdir / "src"), os.environ.get("PYTHONPATH")) if p
    )
    env = child_env(
        {
            "OP_BATCH_SIZE": str(args.batch_size),
            "OP_BATCHES_PER_CALL": str(args.batches_per_call),
            "PYTHONPATH": pythonpath,
            **install_trim_hook(workdir / "src", workdir / "trim"),
        }
    )
    report: dict[str, Any] = {"machine": machine(), "code": code, "contenders": []}
    dev = DevStack(data_dir, logdir / "dev.log", env)
    try:
        report["dev_start_fresh_s"] = dev.start()
        log(f"dev stack up in {report['dev_start_fresh_s']:.1f} s; seeding")
        report.update(seed_sources(dev, args))
    finally:
        report["dev_exit_codes"] = [dev.stop()]
    collections = [s["collection"] for s in report["sources"]]
    ids = [s["id"] for s in report["sources"]]
    contenders: list[dict[str, Any]] = report["contenders"]
    raw_runs = 0

    def raw_loop() -> None:
        nonlocal raw_runs
        raw_runs += 1
        contenders.append(run_copy(f"raw loop #{raw_runs}", "raw", qdrant, collections, args))
        announce(contenders[-1])

    for r in range(args.rounds):
        raw_loop()
        dev = DevStack(data_dir, logdir / "dev.log", env)
        try:
            report.setdefault("dev_restart_s", []).append(dev.start())
            log(f"dev stack restarted in {report['dev_restart_s'][-1]:.1f} s")
            contenders.append(api_merge(dev, ids, args, workdir / "trim", f"api merge #{r + 1}"))
            announce(contenders[-1])
        finally:
            report["dev_exit_codes"].append(dev.stop())
    if args.bracket:
        raw_loop()
    contenders.append(run_copy("in-memory", "memory", qdrant, collections, args))
    announce(contenders[-1])
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="POST /sessions/merge vs a raw scroll/upsert loop vs the in-memory way."
    )
    parser.add_argument("--points", type=int, default=100_000, help="points per source")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=1024, help="OP_BATCH_SIZE, for all")
    parser.add_argument("--batches-per-call", type=int, default=16, help="OP_BATCHES_PER_CALL")
    parser.add_argument("--small-points", type=int, default=100)
    parser.add_argument("--small-runs", type=int, default=10)
    parser.add_argument("--sample-interval", type=float, default=0.05, help="RSS sampling, s")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of (raw loop, API merge); more average out other work on the machine",
    )
    parser.add_argument(
        "--no-bracket",
        dest="bracket",
        action="store_false",
        help="no raw loop after the last API merge",
    )
    parser.add_argument(
        "--no-trim",
        dest="trim",
        action="store_false",
        help="do not malloc_trim the dev process before its baseline",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = ".venv/bin/python -m bench.merge " + " ".join(sys.argv[1:] if argv is None else argv)
    # a short path keeps the Postgres socket inside the data dir
    workdir = Path(tempfile.mkdtemp(prefix="ssmerge-", dir="/tmp"))
    log(f"working in {workdir}")
    began = time.monotonic()
    try:
        report = bench(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.update(
        command=command.strip(),
        points_per_source=args.points,
        dim=args.dim,
        batch_size=args.batch_size,
        batches_per_call=args.batches_per_call,
        sample_interval_s=args.sample_interval,
        total_s=time.monotonic() - began,
    )
    report["ratios"] = compare(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    log(f"raw numbers in {args.output}")
    ok = all(c["ok"] for c in report["contenders"]) and report["small_merge"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
