"""Export and import benchmark of the Edge engine (issue 11), every contender in one run.

One session of ``--points`` points (default 200,000) x ``--dim`` (384) is seeded through
the API of ``session-service dev`` (``bench.stack``). Then, in this order, so that raw
runs bracket the service's:

1. ``raw edge #1``: ``bench.edge_raw transfer --engine edge`` in a fresh process: an Edge
   shard of the same points exported by a plain loop (scroll ``EXPORT_BATCH_SIZE``, the
   service's encoder ``export_format.point_lines``, one ISA-L gzip member per batch,
   content and file SHA-256, fsync), then that artifact decoded
   (``export_format.iter_points``) and upserted into a new shard, ``OP_BATCH_SIZE`` a
   batch, flushed.
2. ``service export``: ``POST /sessions/{id}/exports``; ``service import``:
   ``POST /sessions/import {"export_id"}``. Both with ``Prefer: wait=300``, timed to the
   200 answer; the dev process's ``RssAnon`` and ``VmRSS`` sampled every 50 ms from its
   idle median just before the POST. The stack runs with ``VECTOR_INDEX_MIN_POINTS``
   above the session's size: the import's index workflow finds nothing to do instead of
   building HNSW beside the next contender (``bench.query`` measures that build).
3. ``raw edge #2``: as 1.
4. ``first service's way``: the same two loops on qdrant-client ``QdrantClient(":memory:")``.

The service's artifact is checked afterwards (``export_format.validate``) and the imported
session must hold every point.

Run: ``.venv/bin/python -m bench.export_import`` (~8 min), ``--quick`` (5,000 points).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.edge_raw import contender, run_child, seed_session
from bench.query import NO_INDEX
from bench.sampling import other_load
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
from session_service.domain import export_format as fmt


def raw(name: str, engine: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The export and import rows of one ``bench.edge_raw transfer`` child."""
    extra = [f"--dim={args.dim}", f"--seed={args.seed}"]
    extra += [f"--export-batch={args.export_batch}", f"--import-batch={args.import_batch}"]
    out = run_child("transfer", engine, args.points, work / name.replace(" ", "-"), *extra)
    if out["count"] != args.points or out["exported"] != args.points:
        raise report.CheckFailed(f"{name}: exported {out['exported']}, imported {out['count']}")
    steps = ("export", "import")
    return [contender(f"{name} {s}", out[s], args.points) | {"step": s} for s in steps]


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, dim = args.points, args.dim
    out: dict[str, Any] = {"machine": machine_facts(), "code": snapshot_code(work / "code")}
    out["other_load_at_start_cores"] = other_load()
    dev = DevStack(work / "data", work / "code", work / "dev.log")
    dev.env = {"VECTOR_INDEX_MIN_POINTS": NO_INDEX}
    rows: list[dict[str, Any]] = []
    with dev:
        out["dev_start_s"] = dev.start()
        api = Api(dev.url)
        session = api.create_session("export-source", dim)
        seeded = seed_session(api, session, args.seed, 0, n, dim)
        out["api_seed"] = {"points_per_s": n / seeded}
        log(f"seeded {n} through PUT /points at {n / seeded:,.0f} points/s")
        rows += raw("raw edge #1", "edge", args, work)
        export_path = f"/sessions/{session}/exports"
        export = measured_operation(api, dev, "service export", export_path, {}, n)
        export_id = export["answer"].get("export_id") or export["answer"]["id"]
        body = {"export_id": export_id}
        imported = measured_operation(api, dev, "service import", "/sessions/import", body, n)
        export["step"], imported["step"] = "export", "import"
        rows += [export, imported]
        workflow_result(dev.temporal_address, f"index-{imported['operation_id']}")
        rows += raw("raw edge #2", "edge", args, work)
        rows += raw("first service's way", "memory", args, work)
        artifact = work / "data" / "exports" / f"{export_id}.ndjson.gz"
        with open(artifact, "rb") as f:
            header = fmt.validate(f)
        export["artifact_bytes"] = artifact.stat().st_size
        out["checks"] = {"artifact_points": header.points,
                         "imported_count": api.count(imported["answer"]["id"])}  # fmt: skip
        if args.profile:
            log("profile: one more export and import under py-spy (not counted)")
            out["profile"] = {
                step: measured_operation(api, dev, f"profiled {step}", path, body_, n,
                                         work / f"{step}.pyspy")["profile"]
                for step, path, body_ in (("export", export_path, {}),
                                          ("import", "/sessions/import", body))
            }  # fmt: skip
        api.close()
    out["rows"] = rows
    return out


def evaluate(out: dict[str, Any]) -> dict[str, Any]:
    ev: dict[str, Any] = {}
    for step in ("export", "import"):
        rows = [r for r in out["rows"] if r["step"] == step]
        raw_rates = [r["points_per_s"] for r in rows if r["name"].startswith("raw")]
        service = next(r for r in rows if r["name"].startswith("service"))
        ev[step] = {
            "vs_raw_mean": service["points_per_s"] / float(np.mean(raw_rates)),
            "vs_raw_each": [service["points_per_s"] / r for r in raw_rates],
        }
    n = out["points"]
    ev["checks_ok"] = out["checks"] == {"artifact_points": n, "imported_count": n}
    return ev


def markdown(out: dict[str, Any]) -> str:
    ev = out["evaluation"]
    lines = [
        f"Export and import of {out['points']:,} x {out['dim']} (code `{out['code']['commit']}`).",
        "",
    ]
    for step in ("export", "import"):
        rows = [r for r in out["rows"] if r["step"] == step]
        mean = float(np.mean([r["points_per_s"] for r in rows if r["name"].startswith("raw")]))
        lines += report.contenders(rows, mean)[0 if step == "export" else 2 :]
    service = {r["name"]: r for r in out["rows"] if r["name"].startswith("service")}
    acts = {k: v["history"]["activities_s"] for k, v in service.items()}
    each = {s: ", ".join(f"{x:.2f}x" for x in ev[s]["vs_raw_each"]) for s in ("export", "import")}
    lines += [
        "",
        f"Export {ev['export']['vs_raw_mean']:.2f}x raw edge (each: {each['export']}); import "
        f"{ev['import']['vs_raw_mean']:.2f}x (each: {each['import']}).",
        f"Activities (s): export {acts['service export']}; import {acts['service import']}.",
        f"Artifact {service['service export']['artifact_bytes'] / 1e6:.1f} MB; checks "
        f"{out['checks']}. Seeding through PUT /points: "
        f"{out['api_seed']['points_per_s']:,.0f} points/s.",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200_000, help="a multiple of 1,000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--export-batch", type=int, default=4096, help="EXPORT_BATCH_SIZE")
    p.add_argument("--import-batch", type=int, default=1024, help="OP_BATCH_SIZE")
    p.add_argument("--quick", action="store_true", help="5,000 points")
    p.add_argument("--profile", action="store_true", help="one more of each under py-spy")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return report.options(p)


def run(args: argparse.Namespace, argv: list[str]) -> list[report.Result]:
    if args.quick:
        args.points = 5000
    with workdir("ssedge-xfer-", args.keep) as work:
        out = bench(args, work)
    out |= {"points": args.points, "dim": args.dim}
    out["evaluation"] = ev = evaluate(out)
    report.save("export_import", out, markdown(out))
    if not ev["checks_ok"]:
        raise report.CheckFailed(f"export/import checks: {out['checks']}")
    targets = [
        report.target(f"{step}: service vs raw Edge", ev[step]["vs_raw_mean"], at_least=0.8)
        for step in ("export", "import")
    ]
    cmd = report.command("bench.export_import", argv)
    return report.results(targets, cmd, out["code"], args.quick)


if __name__ == "__main__":
    raise SystemExit(report.main(sys.modules[__name__]))
