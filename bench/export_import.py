"""Export and import benchmark of the Edge engine (issue 11), every contender in one run.

One session of ``--points`` points (default 200,000) x ``--dim`` (384) is seeded through
the API of ``session-service dev`` (a subprocess, ``bench.stack``). Then, in this order,
so that raw runs bracket the service's:

1. ``raw edge #1``: ``bench.edge_raw transfer --engine edge`` in a fresh process: an Edge
   shard of the same points, exported by a plain loop (scroll ``EXPORT_BATCH_SIZE``, the
   service's encoder ``export_format.point_lines``, one ISA-L gzip member per batch,
   content and file SHA-256, fsync), then that artifact decoded
   (``export_format.iter_points``) and upserted into a new shard, ``OP_BATCH_SIZE`` a
   batch, flushed.
2. ``service export``: ``POST /sessions/{id}/exports``; ``service import``:
   ``POST /sessions/import {"export_id"}`` (validation of the whole artifact, then the
   upsert). Both with ``Prefer: wait=300`` (the 200 answer comes when the operation is
   done), timed to that answer; the dev process's ``RssAnon`` and ``VmRSS`` sampled every
   50 ms from its idle median just before the POST. The stack runs with
   ``VECTOR_INDEX_MIN_POINTS`` above the session's size: the index workflow that the
   import starts after its answer finds nothing to do, instead of building HNSW for
   minutes beside the next contender (``bench.merge`` measures that build).
3. ``raw edge #2``: as 1.
4. ``first service's way``: the same two loops on qdrant-client ``QdrantClient(":memory:")``.

The service's artifact is checked afterwards (``export_format.validate``: every line,
the trailer's count and SHA-256), and the imported session must hold every point. CPU:
each window reports the machine's busy cores, ours (this process tree) and others'
(``/proc/stat``): other engineers' work, which makes absolute figures drift.

Run: ``.venv/bin/python -m bench.export_import`` (~8 min), ``--quick`` (5,000 points,
< 2 min). JSON to ``bench/results/edge-export_import.json``, Markdown to stdout.
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

from bench.edge_raw import run_child, seed_session
from bench.sampling import CpuWindow, MemorySampler, PySpy, idle_memory, other_load
from bench.stack import (
    REPO,
    Api,
    DevStack,
    activity_seconds,
    log,
    machine_facts,
    server_seconds,
    snapshot_code,
    workflow_result,
)
from session_service import export_format as fmt

RESULTS = REPO / "bench" / "results" / "edge-export_import.json"
NO_INDEX = str(10**12)


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


def service_run(
    api: Api, dev: DevStack, name: str, path: str, body: dict[str, Any], n: int, spy: Path | None
) -> dict[str, Any]:
    """One operation through the API, with the dev process's memory and the CPU sampled."""
    base = idle_memory(dev.pid)
    log(f"{name}: POST {path}")
    with (
        MemorySampler(dev.pid, baseline=base) as sampler,
        CpuWindow(contender=dev.pid) as cpu,
        PySpy(dev.pid, spy) if spy else _Null() as profiler,
    ):
        answer, seconds = api.long(path, body)
        window = cpu.read()
    op_id = answer["_operation_id"]
    out: dict[str, Any] = {
        "name": name,
        "answer": answer,
        "operation_id": op_id,
        "seconds": seconds,
        "points_per_s": n / seconds,
        "server_s": server_seconds(api.operation(op_id)),
        "memory": sampler.report(),
        "cpu": window,
        "history": activity_seconds(dev.temporal_address, op_id),
    }
    if spy:
        out["profile"] = profiler.summary()
    log(f"{name}: {out['points_per_s']:,.0f} points/s, other load {window['other_cores']}")
    return out


def raw(name: str, engine: str, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """The export and import rows of one ``bench.edge_raw transfer`` child."""
    log(f"{name}: bench.edge_raw transfer --engine {engine}")
    extra = [f"--dim={args.dim}", f"--seed={args.seed}"]
    extra += [f"--export-batch={args.export_batch}", f"--import-batch={args.import_batch}"]
    out = run_child("transfer", engine, args.points, scratch, *extra)
    if out["count"] != args.points or out["exported"] != args.points:
        raise RuntimeError(f"{name}: exported {out['exported']}, imported {out['count']}")
    rows = []
    for step in ("export", "import"):
        loop = out[step]
        rows.append(
            {
                "name": f"{name} {step}",
                "step": step,
                "seconds": loop["seconds"],
                "points_per_s": args.points / loop["seconds"],
                "cpu_s": loop["cpu_s"],
                "memory": loop,
                "cpu": loop.pop("cpu"),
            }
        )
        log(f"{name} {step}: {args.points / loop['seconds']:,.0f} points/s")
    rows[0]["artifact_bytes"] = out["artifact_bytes"]
    rows[0]["seed_points_per_s"] = args.points / out["seed_s"]
    return rows


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, dim = args.points, args.dim
    report: dict[str, Any] = {"machine": machine_facts(), "code": snapshot_code(work / "code")}
    report["other_load_at_start_cores"] = other_load()
    # the import's index workflow would build for minutes beside the next contender
    env = {"VECTOR_INDEX_MIN_POINTS": NO_INDEX}
    dev = DevStack(work / "data", work / "code", work / "dev.log", env)
    rows: list[dict[str, Any]] = []
    with dev:
        report["dev_start_s"] = dev.start()
        api = Api(dev.url)
        session = api.create_session("export-source", dim)
        with CpuWindow(contender=dev.pid) as cpu:
            seeded = seed_session(api, session, args.seed, 0, n, dim)
            report["api_seed"] = {"seconds": seeded, "points_per_s": n / seeded}
            report["api_seed"]["cpu"] = cpu.read()
        log(f"seeded {n} through PUT /points at {n / seeded:,.0f} points/s")

        rows += raw("raw edge #1", "edge", args, work / "raw1")
        export = service_run(
            api, dev, "service export", f"/sessions/{session}/exports", {}, n, None
        )
        export["step"] = "export"
        export_id = export["answer"].get("export_id") or export["answer"]["id"]
        imported = service_run(
            api, dev, "service import", "/sessions/import", {"export_id": export_id}, n, None
        )
        imported["step"] = "import"
        rows += [export, imported]
        workflow_result(dev.temporal_address, f"index-{imported['operation_id']}")
        rows += raw("raw edge #2", "edge", args, work / "raw2")
        rows += raw("first service's way", "memory", args, work / "memory")

        artifact = work / "data" / "exports" / f"{export_id}.ndjson.gz"
        with open(artifact, "rb") as f:
            header = fmt.validate(f)
        export["artifact_bytes"] = artifact.stat().st_size
        imported_id = imported["answer"]["id"]
        report["checks"] = {
            "artifact_points": header.points,
            "imported_count": api.count(imported_id),
        }
        if args.profile:
            log("profile: one more export and import under py-spy (not counted)")
            report["profile"] = {
                "export": service_run(
                    api,
                    dev,
                    "profiled export",
                    f"/sessions/{session}/exports",
                    {},
                    n,
                    work / "export.pyspy",
                )["profile"],
                "import": service_run(
                    api,
                    dev,
                    "profiled import",
                    "/sessions/import",
                    {"export_id": export_id},
                    n,
                    work / "import.pyspy",
                )["profile"],
            }
        api.close()
    report["rows"] = rows
    return report


def evaluate(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = report["points"]
    for step in ("export", "import"):
        rows = [r for r in report["rows"] if r["step"] == step]
        raw_rates = [r["points_per_s"] for r in rows if r["name"].startswith("raw")]
        service = next(r for r in rows if r["name"].startswith("service"))
        mean = float(np.mean(raw_rates))
        out[step] = {
            "vs_raw_mean": service["points_per_s"] / mean,
            "vs_raw_each": [service["points_per_s"] / r for r in raw_rates],
            "met": service["points_per_s"] >= 0.8 * mean,
        }
    out["checks_ok"] = report["checks"] == {"artifact_points": n, "imported_count": n}
    return out


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    ev = report["evaluation"]
    lines = [
        f"Export and import of {report['points']:,} x {report['dim']} (export batch "
        f"{report['export_batch']}, import batch {report['import_batch']}; code "
        f"`{report['code']['git_head']}`, {report['total_s'] / 60:.1f} min).",
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
    for step in ("export", "import"):
        rows = [r for r in report["rows"] if r["step"] == step]
        mean = float(np.mean([r["points_per_s"] for r in rows if r["name"].startswith("raw")]))
        for r in rows:
            cpu_s = r.get("cpu_s", r["cpu"]["contender_cores"] * r["cpu"]["window_s"])
            lines.append(
                row(
                    r["name"],
                    f"{r['seconds']:.2f}",
                    f"{r['points_per_s']:,.0f}",
                    f"{r['points_per_s'] / mean:.2f}x",
                    f"{cpu_s:.1f}",
                    f"{r['memory']['anon_growth_mb']:.0f}",
                    f"{r['memory']['rss_growth_mb']:.0f}",
                    f"{r['cpu']['other_cores']:.2f}",
                )
            )
    mark = {True: "met", False: "**missed**"}
    lines += ["", row("target", "measured", ""), row("---", "---:", "---")]
    for step in ("export", "import"):
        each = ", ".join(f"{x:.2f}x" for x in ev[step]["vs_raw_each"])
        lines.append(
            row(
                f"service {step} >= 0.8x raw edge",
                f"{ev[step]['vs_raw_mean']:.2f}x (each: {each})",
                mark[ev[step]["met"]],
            )
        )
    service = {r["name"]: r for r in report["rows"] if r["name"].startswith("service")}
    acts = {k: v["history"]["activities_s"] for k, v in service.items()}
    lines += [
        "",
        f"Activities (s): export {acts['service export']}; import {acts['service import']}.",
        f"Artifact {service['service export']['artifact_bytes'] / 1e6:.1f} MB; checks "
        f"{report['checks']}. Seeding through PUT /points: "
        f"{report['api_seed']['points_per_s']:,.0f} points/s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000, help="a multiple of 1,000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--export-batch", type=int, default=4096, help="EXPORT_BATCH_SIZE")
    parser.add_argument("--import-batch", type=int, default=1024, help="OP_BATCH_SIZE")
    parser.add_argument("--quick", action="store_true", help="5,000 points")
    parser.add_argument("--profile", action="store_true", help="one more of each under py-spy")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.points = 5000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssedge-xfer-", dir="/tmp"))
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
        command="python -m bench.export_import " + " ".join(sys.argv[1:] if argv is None else argv),
        points=args.points,
        dim=args.dim,
        export_batch=args.export_batch,
        import_batch=args.import_batch,
        total_s=time.monotonic() - began,
    )
    report["evaluation"] = evaluate(report)
    text = markdown(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str))
    args.output.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0 if report["evaluation"]["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
