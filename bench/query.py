"""Query benchmark (issue 11): 10 nearest of ``--points`` x ``--dim`` through the API,
p50 and p99 over ``--queries`` queries, beside a brute-force numpy baseline.

``POST /sessions/{id}/points/query`` (limit 10, no payload) is sent one query at a time on
one keep-alive connection, twice:

- **scan**: on a stack started with ``VECTOR_INDEX_MIN_POINTS`` above the collection's
  size, so that no index is built;
- **HNSW**: after a restart with the shipped settings and the service's own
  ``IndexWorkflow`` (what merge, split and import start), timed on its own.

Beside them, on the same query vectors: numpy brute force over the same points (unit
float32 rows, ``m @ q``, partial sort) and raw Edge scanning a shard of the same points
(``bench.edge_raw query``, a fresh process). Recall@10 of each against numpy's answer.

After ``bench.merge`` (the default of ``make bench``) the collection is the merged session
of 2 x 100,000; on its own (``python -m bench.query``) one session of ``--points`` is
seeded through the API first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.edge_raw import query_vectors, run_child, seed_session, unit_matrix
from bench.sampling import CpuWindow, MemorySampler, idle_memory
from bench.stack import (
    Api,
    DevStack,
    log,
    machine_facts,
    run_index_workflow,
    snapshot_code,
    workdir,
)
from session_service.stores.vector_store import collection_name_for

NO_INDEX = str(10**12)  # VECTOR_INDEX_MIN_POINTS: the stack builds no index


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


def api_queries(
    api: Api, dev: DevStack, session_id: str, vectors: np.ndarray, exact: list[list[int]]
) -> dict[str, Any]:
    ms, ids = [], []
    with CpuWindow(contender=dev.pid) as cpu:
        for v in vectors.tolist():
            began = time.perf_counter()
            ids.append(api.query(session_id, v))
            ms.append((time.perf_counter() - began) * 1000)
        window = cpu.read()
    return latency(ms, ids, exact) | {"cpu": window}


def measure(
    dev: DevStack, session_id: str, points: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Every contender on a running ``dev`` (started with ``NO_INDEX``) whose session
    holds ids 0 to ``points - 1`` of ``bench.edge_raw``'s generator. Restarts ``dev``
    with the shipped settings for the HNSW half (unless ``--no-index``)."""
    vectors = query_vectors(args.seed, args.queries, args.dim)
    matrix = unit_matrix(args.seed, points, args.dim)
    np_ms, exact = numpy_queries(matrix, vectors)
    del matrix
    out: dict[str, Any] = {"numpy brute force": latency(np_ms, exact, exact)}
    log(f"raw edge: {args.queries} queries on a shard of {points:,} (scan)")
    raw = run_child("query", "edge", points, work / "raw-query", f"--dim={args.dim}",
                    f"--seed={args.seed}", f"--queries={args.queries}")  # fmt: skip
    out["raw edge, scan"] = latency(raw["ms"], raw["ids"], exact)
    log(f"service: {args.queries} queries (scan)")
    api = Api(dev.url)
    out["service, scan (before the index)"] = api_queries(api, dev, session_id, vectors, exact)
    api.close()
    if not args.index:
        return {"queries": out}
    log("restarting the stack with the shipped settings to build the index")
    dev.stop()
    dev.env = {}
    restart = dev.start()
    with MemorySampler(dev.pid, baseline=idle_memory(dev.pid)) as sampler:
        with CpuWindow(contender=dev.pid) as cpu:
            began = time.perf_counter()
            result = run_index_workflow(
                dev.temporal_address,
                f"index-bench-{session_id}",
                [collection_name_for(session_id)],
                [session_id],
            )
            wall, window = time.perf_counter() - began, cpu.read()
    built = result.collections[0]
    log(f"index built in {built.seconds:.1f}s (workflow {wall:.1f}s)")
    api = Api(dev.url)
    out["service, HNSW (after the index)"] = api_queries(api, dev, session_id, vectors, exact)
    api.close()
    index = {"workflow_s": wall, "build_s": built.seconds, "built": built.built}
    index |= {"points": built.points, "indexed": built.indexed, "cpu": window}
    return {"queries": out, "dev_restart_s": restart, "index": index | {"memory": sampler.report()}}


def markdown(result: dict[str, Any], points: int, dim: int) -> str:
    lines = [
        f"Queries, 10 nearest of {points:,} x {dim}, one at a time:",
        "",
        "| contender | p50 ms | p99 ms | mean ms | recall@10 | other CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, q in result["queries"].items():
        other = q["cpu"]["other_cores"] if "cpu" in q else ""
        lines.append(
            f"| {name} | {q['p50_ms']:.2f} | {q['p99_ms']:.2f} | {q['mean_ms']:.2f} "
            f"| {q['recall_at_10']:.3f} | {other} |"
        )
    if "index" in result:
        idx = result["index"]
        lines += [
            "",
            f"Index: built {idx['built']}, {idx['indexed']:,} of {idx['points']:,} points in "
            f"{idx['build_s']:.1f} s (IndexWorkflow {idx['workflow_s']:.1f} s); dev RssAnon "
            f"growth {idx['memory']['anon_growth_mb']:.0f} MB; other CPU "
            f"{idx['cpu']['other_cores']:.2f}.",
        ]
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[report.Target]:
    """No bound in the issue: p50 and p99 beside numpy's, as ratios to numpy's."""
    q = result["queries"]
    base = q["numpy brute force"]
    rows = []
    for name, label in (("service, scan (before the index)", "scan"),
                        ("service, HNSW (after the index)", "HNSW")):  # fmt: skip
        if name in q:
            for p in ("p50", "p99"):
                ratio = q[name][f"{p}_ms"] / base[f"{p}_ms"]
                rows.append(report.target(f"query: service {label} {p} / numpy's", ratio))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200_000, help="a multiple of 1,000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--no-index", dest="index", action="store_false", help="the scan only")
    p.add_argument("--quick", action="store_true", help="10,000 points, 100 queries")
    p.add_argument("--seed", type=int, default=7)
    return report.options(p)


def run(args: argparse.Namespace, argv: list[str]) -> list[report.Result]:
    """On its own: a stack, one session of ``--points`` seeded through the API."""
    if args.quick:
        args.points, args.queries = 10_000, 100
    with workdir("ssbench-query-") as work:
        code = snapshot_code(work / "code")
        dev = DevStack(work / "data", work / "code", work / "dev.log")
        dev.env = {"VECTOR_INDEX_MIN_POINTS": NO_INDEX}
        with dev:
            dev.start()
            api = Api(dev.url)
            session = api.create_session("query", args.dim)
            seeded = seed_session(api, session, args.seed, 0, args.points, args.dim)
            api.close()
            log(f"seeded {args.points:,} through PUT /points in {seeded:.1f}s")
            result = measure(dev, session, args.points, args, work)
    result |= {"machine": machine_facts(), "code": code, "points": args.points}
    report.save("query", result, markdown(result, args.points, args.dim))
    return report.results(targets(result), report.command("bench.query", argv), code, args.quick)


if __name__ == "__main__":
    raise SystemExit(report.main(sys.modules[__name__]))
