"""Merge and query benchmark of the Edge engine (issue 11), every contender in one run.

Two sessions of ``--points`` points (default 100,000) x ``--dim`` (384), disjoint ids,
are seeded through the API of ``session-service dev`` (a subprocess, ``bench.stack``).
Then, in this order, so that raw runs bracket the service's:

1. ``raw edge #1``: ``bench.edge_raw merge --engine edge`` in a fresh process: two Edge
   shards of the same points copied into a third with ``qdrant_edge`` directly, scroll
   ``--batch`` + upsert, flushed at the end (the physical limit).
2. ``service``: ``POST /sessions/merge`` (``Prefer: wait=300``: the 200 answer comes when
   the merge is done), timed to that answer; the dev process's ``RssAnon`` and ``VmRSS``
   are sampled every 50 ms from its idle median just before the POST.
3. ``raw edge #2``: as 1, then ``--queries`` 10-nearest queries on its copy (a scan).
4. ``first service's way``: ``bench.edge_raw merge --engine memory``: qdrant-client
   ``QdrantClient(":memory:")``, every point of both sources read into a Python list,
   then upserted (not durable).

Sources are merged with ``archive_sources: false`` (so a ``--profile`` pass can merge
them again); archiving is one Postgres update and does not move points.

Queries (``POST /sessions/{id}/points/query``, limit 10, no payload, one at a time on a
keep-alive connection) on the merged session: first as it is after the merge (no index:
a scan), then after the service's ``IndexWorkflow`` has built its HNSW index. The
measured merge runs on a stack started with ``VECTOR_INDEX_MIN_POINTS`` above the merged
size, so the index workflow that the merge starts finds nothing to do and the scan can be
measured; then the stack restarts with the shipped settings and runs ``IndexWorkflow``
on the merged collection (the workflow and activity the merge starts, here started by
the benchmark), timed on its own. Beside them: brute force in numpy over the same
points (unit float32 rows, ``m @ q`` and a partial sort) and raw Edge's scan (3.);
recall@10 of every contender against numpy's exact answer.

CPU: every contender's window reports the machine's busy cores, ours (this process tree:
the orchestrator, the dev stack, the raw children) and others' (the rest, from
``/proc/stat``): other engineers' work, which makes absolute figures drift.

Run: ``.venv/bin/python -m bench.merge`` (~10 min), ``--quick`` (2 x 5,000, 100
queries, < 2 min). JSON to ``bench/results/edge-merge.json``, Markdown to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.edge_raw import query_vectors, run_child, seed_session, unit_matrix
from bench.sampling import CpuWindow, MemorySampler, PySpy, idle_memory, other_load
from bench.stack import (
    REPO,
    Api,
    DevStack,
    activity_seconds,
    log,
    machine_facts,
    run_index_workflow,
    server_seconds,
    snapshot_code,
    workflow_result,
)
from session_service.stores.vector_store import collection_name_for

RESULTS = REPO / "bench" / "results" / "edge-merge.json"
ANON_TARGET_MB = 200.0
NO_INDEX = str(10**12)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(int(np.ceil(q / 100 * len(ordered))) - 1, 0)]


def latency(ms: list[float], ids: list[list[Any]], exact: list[list[int]]) -> dict[str, Any]:
    recall = [len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact, strict=True)]
    return {
        "queries": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(float(np.mean(ms)), 3),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }


def numpy_queries(matrix: np.ndarray, vectors: np.ndarray) -> tuple[list[float], list[list[int]]]:
    ms, ids = [], []
    for q in vectors.astype(np.float32):
        began = time.perf_counter()
        scores = matrix @ q
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.argsort(-scores[top])]
        ms.append((time.perf_counter() - began) * 1000)
        ids.append(top.tolist())
    return ms, ids


def api_queries(api: Api, session_id: str, vectors: np.ndarray) -> tuple[list[float], list[Any]]:
    ms, ids = [], []
    for v in vectors.tolist():
        began = time.perf_counter()
        found = api.query(session_id, v)
        ms.append((time.perf_counter() - began) * 1000)
        ids.append(found)
    return ms, ids


def service_merge(
    api: Api, dev: DevStack, sources: list[str], expected: int, spy: Path | None = None
) -> dict[str, Any]:
    """The merge through the API, with the dev process's memory and the CPU sampled."""
    base = idle_memory(dev.pid)
    body = {"source_session_ids": sources, "archive_sources": False}
    with (
        MemorySampler(dev.pid, baseline=base) as sampler,
        CpuWindow(contender=dev.pid) as cpu,
        PySpy(dev.pid, spy) if spy else _Null() as profiler,
    ):
        session, seconds = api.long("/sessions/merge", body)
        window = cpu.read()
    op_id = session["_operation_id"]
    op = api.operation(op_id)
    out: dict[str, Any] = {
        "name": "service (POST /sessions/merge)",
        "session_id": session["id"],
        "operation_id": op_id,
        "seconds": seconds,
        "server_s": server_seconds(op),
        "count": api.count(session["id"]),
        "memory": sampler.report(),
        "cpu": window,
        "history": activity_seconds(dev.temporal_address, op_id),
    }
    if spy:
        out["profile"] = profiler.summary()
    out["points_per_s"] = expected / seconds
    return out


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


def raw(name: str, engine: str, args: argparse.Namespace, scratch: Path, queries: int = 0) -> Any:
    log(f"{name}: bench.edge_raw merge --engine {engine}")
    extra = [f"--dim={args.dim}", f"--seed={args.seed}", f"--batch={args.batch}"]
    if queries:
        extra.append(f"--queries={queries}")
    out = run_child("merge", engine, args.points, scratch, *extra)
    out["name"] = name
    out["seconds"] = out["copy"]["seconds"]
    out["points_per_s"] = 2 * args.points / out["seconds"]
    out["memory"] = out.pop("copy")
    out["cpu"] = out["memory"].pop("cpu")  # the copy loop's window, not the whole child's
    log(f"{name}: {out['points_per_s']:,.0f} points/s, other load {out['cpu']['other_cores']}")
    return out


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, dim, expected = args.points, args.dim, 2 * args.points
    report: dict[str, Any] = {"machine": machine_facts(), "code": snapshot_code(work / "code")}
    report["other_load_at_start_cores"] = other_load()
    dev = DevStack(
        work / "data", work / "code", work / "dev.log", {"VECTOR_INDEX_MIN_POINTS": NO_INDEX}
    )
    contenders: list[dict[str, Any]] = []
    with dev:
        report["dev_start_s"] = dev.start()
        api = Api(dev.url)
        sources = [api.create_session(f"merge-source-{k}", dim) for k in range(2)]
        with CpuWindow(contender=dev.pid) as cpu:
            seeded = sum(
                seed_session(api, s, args.seed, k * n, n, dim) for k, s in enumerate(sources)
            )
            report["api_seed"] = {
                "seconds": seeded,
                "points_per_s": expected / seeded,
                "cpu": cpu.read(),
            }
        log(f"seeded 2 x {n} through PUT /points at {expected / seeded:,.0f} points/s")

        contenders.append(raw("raw edge #1", "edge", args, work / "raw1"))
        log("service: POST /sessions/merge")
        merged = service_merge(api, dev, sources, expected)
        log(
            f"service: {merged['points_per_s']:,.0f} points/s, other {merged['cpu']['other_cores']}"
        )
        contenders.append(merged)
        workflow_result(dev.temporal_address, f"index-{merged['operation_id']}")
        contenders.append(raw("raw edge #2", "edge", args, work / "raw2", args.queries))
        contenders.append(raw("first service's way", "memory", args, work / "memory"))

        vectors = query_vectors(args.seed, args.queries, dim)
        matrix = unit_matrix(args.seed, expected, dim)
        np_ms, exact = numpy_queries(matrix, vectors)
        del matrix
        queries: dict[str, Any] = {"numpy brute force": latency(np_ms, exact, exact)}
        raw_q = contenders[2].pop("queries")
        queries["raw edge, scan"] = latency(raw_q["ms"], raw_q["ids"], exact)
        log(f"service: {args.queries} queries on the merged session (scan)")
        with CpuWindow(contender=dev.pid) as cpu:
            ms, ids = api_queries(api, merged["session_id"], vectors)
            queries["service, scan (before the index)"] = latency(ms, ids, exact) | {
                "cpu": cpu.read()
            }

        if args.profile:
            log("profile: a second merge under py-spy (not counted)")
            report["profile"] = service_merge(api, dev, sources, expected, work / "merge.pyspy")
        api.close()
        dev.stop()
        report["contenders"] = contenders
        report["queries"] = queries
        if not args.index:
            return report

        log("restarting the stack with the shipped settings to build the index")
        dev.env = {}
        report["dev_restart_s"] = dev.start()
        api = Api(dev.url)
        collection = collection_name_for(merged["session_id"])
        base = idle_memory(dev.pid)
        with MemorySampler(dev.pid, baseline=base) as sampler, CpuWindow(contender=dev.pid) as cpu:
            began = time.perf_counter()
            result = run_index_workflow(
                dev.temporal_address,
                f"index-{merged['operation_id']}-bench",
                [collection],
                [merged["session_id"]],
            )
            wall = time.perf_counter() - began
            window = cpu.read()
        outcome = result.collections[0]
        report["index"] = {
            "workflow_s": wall,
            "build_s": outcome.seconds,
            "built": outcome.built,
            "points": outcome.points,
            "indexed": outcome.indexed,
            "dev_memory": sampler.report(),
            "cpu": window,
        }
        log(f"index built in {outcome.seconds:.1f}s (workflow {wall:.1f}s)")
        with CpuWindow(contender=dev.pid) as cpu:
            ms, ids = api_queries(api, merged["session_id"], vectors)
            queries["service, HNSW (after the index)"] = latency(ms, ids, exact) | {
                "cpu": cpu.read()
            }
        api.close()
    return report


def evaluate(report: dict[str, Any]) -> dict[str, Any]:
    c = {x["name"]: x for x in report["contenders"]}
    raw_rates = [c["raw edge #1"]["points_per_s"], c["raw edge #2"]["points_per_s"]]
    service = c["service (POST /sessions/merge)"]
    old = c["first service's way"]
    anon = service["memory"]["anon_growth_mb"]
    return {
        "vs_raw_mean": service["points_per_s"] / float(np.mean(raw_rates)),
        "vs_raw_each": [service["points_per_s"] / r for r in raw_rates],
        "vs_first_service": service["points_per_s"] / old["points_per_s"],
        "anon_growth_mb": anon,
        "met_raw": service["points_per_s"] >= 0.8 * float(np.mean(raw_rates)),
        "met_first_service": service["points_per_s"] >= 2 * old["points_per_s"],
        "met_memory": anon <= ANON_TARGET_MB,
        "count_ok": all(x["count"] == 2 * report["points_per_source"] for x in c.values()),
    }


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


MARK = {True: "met", False: "**missed**"}


def markdown(report: dict[str, Any]) -> str:
    ev = report["evaluation"]
    contenders = report["contenders"]
    raw_mean = float(np.mean([x["points_per_s"] for x in contenders if x["name"][:3] == "raw"]))
    lines = [
        f"Merge 2 x {report['points_per_source']:,} x {report['dim']}, batch {report['batch']} "
        f"(code `{report['code']['git_head']}`, {report['total_s'] / 60:.1f} min).",
        "",
        row(
            "contender (in run order)",
            "seconds",
            "points/s",
            "vs raw edge (mean)",
            "CPU s",
            "RssAnon growth MB",
            "RSS growth MB",
            "other CPU (cores)",
        ),
        row("---", *["---:"] * 7),
    ]
    for x in contenders:
        cpu_s = x["memory"].get("cpu_s", x["cpu"]["contender_cores"] * x["cpu"]["window_s"])
        lines.append(
            row(
                x["name"],
                f"{x['seconds']:.2f}",
                f"{x['points_per_s']:,.0f}",
                f"{x['points_per_s'] / raw_mean:.2f}x",
                f"{cpu_s:.1f}",
                f"{x['memory']['anon_growth_mb']:.0f}",
                f"{x['memory']['rss_growth_mb']:.0f}",
                f"{x['cpu']['other_cores']:.2f}",
            )
        )
    each = ", ".join(f"{r:.2f}x" for r in ev["vs_raw_each"])
    lines += [
        "",
        row("target", "measured", ""),
        row("---", "---:", "---"),
        row(
            "service >= 0.8x raw edge",
            f"{ev['vs_raw_mean']:.2f}x (each: {each})",
            MARK[ev["met_raw"]],
        ),
        row(
            "service >= 2x the first service's way",
            f"{ev['vs_first_service']:.2f}x",
            MARK[ev["met_first_service"]],
        ),
        row(
            f"RssAnon growth <= {ANON_TARGET_MB:.0f} MB",
            f"{ev['anon_growth_mb']:.0f} MB",
            MARK[ev["met_memory"]],
        ),
        "",
        f"Queries, 10 nearest of {2 * report['points_per_source']:,} x {report['dim']}, "
        f"{report['queries_count']} one at a time:",
        "",
        row("contender", "p50 ms", "p99 ms", "mean ms", "recall@10", "other CPU (cores)"),
        row("---", *["---:"] * 5),
    ]
    for name, q in report["queries"].items():
        other = q["cpu"]["other_cores"] if "cpu" in q else ""
        lines.append(
            row(
                name,
                f"{q['p50_ms']:.2f}",
                f"{q['p99_ms']:.2f}",
                f"{q['mean_ms']:.2f}",
                f"{q['recall_at_10']:.3f}",
                other,
            )
        )
    idx = report.get("index")
    if idx is None:
        return "\n".join(lines)
    lines += [
        "",
        f"Index: built {idx['built']}, {idx['indexed']:,} of {idx['points']:,} points indexed "
        f"in {idx['build_s']:.1f} s (IndexWorkflow {idx['workflow_s']:.1f} s); dev RssAnon "
        f"growth {idx['dev_memory']['anon_growth_mb']:.0f} MB; other CPU "
        f"{idx['cpu']['other_cores']:.2f}. Seeding through PUT /points: "
        f"{report['api_seed']['points_per_s']:,.0f} points/s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="per source (x 1,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=1024, help="the raw loops' (OP_BATCH_SIZE)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="2 x 5,000 points, 100 queries")
    parser.add_argument("--profile", action="store_true", help="one more merge under py-spy")
    parser.add_argument(
        "--no-index",
        dest="index",
        action="store_false",
        help="stop after the scan queries (no restart, no index build)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.queries = 5000, 100
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssedge-merge-", dir="/tmp"))
    log(f"working in {work}")
    began = time.monotonic()
    try:
        report = bench(args, work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.update(
        command="python -m bench.merge " + " ".join(sys.argv[1:] if argv is None else argv),
        points_per_source=args.points,
        dim=args.dim,
        batch=args.batch,
        queries_count=args.queries,
        total_s=time.monotonic() - began,
    )
    report["evaluation"] = evaluate(report)
    text = markdown(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str))
    args.output.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0 if report["evaluation"]["count_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
