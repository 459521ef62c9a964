"""Merge benchmark of the Edge engine (issue 11), every contender in one run.

Two sessions of ``--points`` points (default 100,000) x ``--dim`` (384), disjoint ids,
are seeded through the API of ``session-service dev`` (``bench.stack``). Then, in this
order, so that raw runs bracket the service's:

1. ``raw edge #1``: ``bench.edge_raw merge --engine edge`` in a fresh process: two Edge
   shards of the same points copied into a third with ``qdrant_edge`` directly, scroll
   ``--batch`` + upsert, flushed at the end (the physical limit).
2. ``service``: ``POST /sessions/merge`` (``Prefer: wait=300``: the 200 answer comes when
   the merge is done), timed to that answer; the dev process's ``RssAnon`` and ``VmRSS``
   sampled every 50 ms from its idle median just before the POST.
3. ``raw edge #2``: as 1.
4. ``first service's way``: ``bench.edge_raw merge --engine memory``: qdrant-client
   ``QdrantClient(":memory:")``, every point of both sources read into a Python list,
   then upserted (not durable).

Sources are merged with ``archive_sources: false`` (so a ``--profile`` pass can merge
them again). The stack runs with ``VECTOR_INDEX_MIN_POINTS`` above the merged size, so
the index workflow the merge starts has nothing to do; then, unless ``--no-query``,
``bench.query`` measures queries on the merged session (scan, then HNSW after the
service's ``IndexWorkflow``, timed on its own). CPU windows report ours and others'.

Run: ``.venv/bin/python -m bench.merge`` (~10 min), ``--quick`` (2 x 5,000, 100 queries).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import query, report
from bench.edge_raw import contender, run_child, seed_session
from bench.sampling import CpuWindow, other_load
from bench.stack import (
    Api,
    DevStack,
    log,
    machine_facts,
    measured_operation,
    snapshot_code,
    workdir,
    workflow_result,
)

ANON_TARGET_MB = 200.0
SERVICE = "service (POST /sessions/merge)"


def raw(name: str, engine: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    extra = [f"--dim={args.dim}", f"--seed={args.seed}", f"--batch={args.batch}"]
    out = run_child("merge", engine, args.points, work / name.replace(" ", "-"), *extra)
    return contender(name, out["copy"], 2 * args.points) | {"count": out["count"]}


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, dim, expected = args.points, args.dim, 2 * args.points
    out: dict[str, Any] = {"machine": machine_facts(), "code": snapshot_code(work / "code")}
    out["other_load_at_start_cores"] = other_load()
    dev = DevStack(work / "data", work / "code", work / "dev.log")
    dev.env = {"VECTOR_INDEX_MIN_POINTS": query.NO_INDEX}
    with dev:
        out["dev_start_s"] = dev.start()
        api = Api(dev.url)
        sources = [api.create_session(f"merge-source-{k}", dim) for k in range(2)]
        with CpuWindow(contender=dev.pid) as cpu:
            seeded = sum(
                seed_session(api, s, args.seed, k * n, n, dim) for k, s in enumerate(sources)
            )
            out["api_seed"] = {"points_per_s": expected / seeded, "cpu": cpu.read()}
        log(f"seeded 2 x {n} through PUT /points at {expected / seeded:,.0f} points/s")
        body = {"source_session_ids": sources, "archive_sources": False}
        contenders = [raw("raw edge #1", "edge", args, work)]
        merged = measured_operation(api, dev, SERVICE, "/sessions/merge", body, expected)
        merged["count"] = api.count(merged["answer"]["id"])
        workflow_result(dev.temporal_address, f"index-{merged['operation_id']}")
        contenders += [merged, raw("raw edge #2", "edge", args, work)]
        contenders.append(raw("first service's way", "memory", args, work))
        if args.profile:
            log("profile: a second merge under py-spy (not counted)")
            spy = work / "merge.pyspy"
            out["profile"] = measured_operation(
                api, dev, "profiled merge", "/sessions/merge", body, expected, spy
            )["profile"]
        api.close()
        out["contenders"] = contenders
        if args.query:
            out["query"] = query.measure(dev, merged["answer"]["id"], expected, args, work)
    return out


def evaluate(out: dict[str, Any]) -> dict[str, Any]:
    c = {x["name"]: x for x in out["contenders"]}
    raw_rates = [c["raw edge #1"]["points_per_s"], c["raw edge #2"]["points_per_s"]]
    service, old = c[SERVICE], c["first service's way"]
    return {
        "vs_raw_mean": service["points_per_s"] / float(np.mean(raw_rates)),
        "vs_raw_each": [service["points_per_s"] / r for r in raw_rates],
        "vs_first_service": service["points_per_s"] / old["points_per_s"],
        "anon_growth_mb": service["memory"]["anon_growth_mb"],
        "count_ok": all(x["count"] == 2 * out["points_per_source"] for x in c.values()),
    }


def markdown(out: dict[str, Any]) -> str:
    ev, contenders = out["evaluation"], out["contenders"]
    raw_mean = float(np.mean([x["points_per_s"] for x in contenders if x["name"][:3] == "raw"]))
    lines = [
        f"Merge 2 x {out['points_per_source']:,} x {out['dim']}, batch "
        f"{out['batch']} (code `{out['code']['commit']}`).",
        "",
        *report.contenders(contenders, raw_mean),
    ]
    each = ", ".join(f"{r:.2f}x" for r in ev["vs_raw_each"])
    lines += [
        "",
        f"Service vs raw edge {ev['vs_raw_mean']:.2f}x (each: {each}); vs the first "
        f"service's way {ev['vs_first_service']:.2f}x; RssAnon growth "
        f"{ev['anon_growth_mb']:.0f} MB. Seeding through PUT /points: "
        f"{out['api_seed']['points_per_s']:,.0f} points/s.",
    ]
    if "query" in out:
        lines += ["", query.markdown(out["query"], 2 * out["points_per_source"],
                                     out["dim"])]  # fmt: skip
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="per source (x 1,000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--batch", type=int, default=1024, help="the raw loops' (OP_BATCH_SIZE)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="2 x 5,000 points, 100 queries")
    p.add_argument("--profile", action="store_true", help="one more merge under py-spy")
    p.add_argument("--no-query", dest="query", action="store_false", help="no bench.query")
    p.add_argument("--no-index", dest="index", action="store_false", help="queries: scan only")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return report.options(p)


def run(args: argparse.Namespace, argv: list[str]) -> list[report.Result]:
    if args.quick:
        args.points, args.queries = 5000, 100
    with workdir("ssedge-merge-", args.keep) as work:
        out = bench(args, work)
    out |= {"points_per_source": args.points, "dim": args.dim, "batch": args.batch}
    out["evaluation"] = ev = evaluate(out)
    report.save("merge", out, markdown(out))
    if not ev["count_ok"]:
        raise report.CheckFailed("a merged collection lacks points")
    targets = [
        report.target("merge: service vs raw Edge", ev["vs_raw_mean"], at_least=0.8),
        report.target(
            "merge: service vs the first service's way", ev["vs_first_service"], at_least=2
        ),  # fmt: skip
        report.target(
            "merge: service RssAnon growth", ev["anon_growth_mb"], at_most=ANON_TARGET_MB, unit="MB"
        ),  # fmt: skip
    ]
    if "query" in out:
        targets += query.targets(out["query"])
    return report.results(targets, report.command("bench.merge", argv), out["code"], args.quick)


if __name__ == "__main__":
    raise SystemExit(report.main(sys.modules[__name__]))
