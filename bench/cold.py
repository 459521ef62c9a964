"""Cold sessions benchmark (issue 16): offload and reload beside export and import of the
same session, in the same run, and the first use of an offloaded session.

One session of ``--points`` points (default 100,000) x ``--dim`` (384) is seeded through
the API of ``session-service dev`` (a subprocess, ``bench.stack``), with the generator of
the merge and export benchmarks. Then, in this order:

1. ``service export``: ``POST /sessions/{id}/exports``; ``service import``:
   ``POST /sessions/import {"export_id"}`` (a second session).
2. ``offload``: ``POST /sessions/{id}/offload`` (write the artifact with the export's
   writer, read it all back, mark, drop the collection); ``reload``:
   ``POST /sessions/{id}/reload`` (recreate the collection from the artifact with the
   import's one-pass reader, count, mark live, delete the artifact).

Each with ``Prefer: wait=300``, timed to its 200 answer, the dev process's memory and the
machine's CPU sampled (``bench.sampling``). Disk: the engine's files for the live
collection (the Edge shard directory: allocated blocks and apparent size) against the
offload's artifact. After the reload, every point is checked against the generator.

First use: a session of ``--first-use-points`` (10,000) is offloaded, then
``GET /sessions/{id}/points?limit=10`` is timed from the request to its answer (the reload
it triggers included), ``--repeats`` times (offloaded again before each), beside the same
read of the live session.

Run: ``.venv/bin/python -m bench.cold`` (~2 min; also ``python -m bench --only cold``),
``--quick`` (5,000 and 2,000 points). JSON to ``bench/results/cold.json``, Markdown to
stdout and ``cold.md``; its rows (ratios and the first-use median, reported without a
bound: the issue asks for figures) go into BENCHMARKS.md's summary table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import report
from bench.edge_raw import block, payload, seed_session
from bench.sampling import CpuWindow, MemorySampler, idle_memory, other_load
from bench.stack import (
    Api,
    DevStack,
    activity_seconds,
    log,
    machine_facts,
    snapshot_code,
    workdir,
)

NO_INDEX = str(10**12)


def disk(path: Path) -> dict[str, int]:
    """Allocated bytes (blocks) and apparent bytes of a file or a directory tree."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [os.stat(p) for p in files]
    return {
        "allocated": sum(s.st_blocks * 512 for s in stats),
        "apparent": sum(s.st_size for s in stats),
        "files": len(files),
    }


def timed(
    api: Api, dev: DevStack, name: str, path: str, body: dict[str, Any], n: int
) -> dict[str, Any]:
    base = idle_memory(dev.pid)
    log(f"{name}: POST {path}")
    with MemorySampler(dev.pid, baseline=base) as sampler, CpuWindow(contender=dev.pid) as cpu:
        answer, seconds = api.long(path, body)
        window = cpu.read()
    out = {
        "name": name,
        "answer": answer,
        "seconds": seconds,
        "points_per_s": n / seconds,
        "memory": sampler.report(),
        "cpu": window,
        "history": activity_seconds(dev.temporal_address, answer["_operation_id"]),
    }
    log(
        f"{name}: {n / seconds:,.0f} points/s ({seconds:.2f} s), other load {window['other_cores']}"
    )
    return out


def check_points(http: httpx.Client, sid: str, seed: int, n: int, dim: int) -> int:
    """Every point of ids 0..n-1 with the generator's vector and payload (the session is
    Cosine: the engine stores unit vectors, in float32)."""
    want = np.concatenate([block(seed, k, dim) for k in range((n + 999) // 1000)])[:n]
    want = (want / np.linalg.norm(want, axis=1, keepdims=True)).astype(np.float32)
    seen = 0
    offset: Any = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "with_vectors": "true"}
        if offset is not None:
            params["offset"] = offset
        page = http.get(f"/sessions/{sid}/points", params=params).json()
        for p in page["points"]:
            i = p["id"]
            if p["payload"] != payload(i) or not np.allclose(p["vector"], want[i], atol=1e-6):
                raise RuntimeError(f"point {i} differs after the reload")
            seen += 1
        offset = page["next_offset"]
        if offset is None:
            return seen


def first_use(api: Api, sid: str, repeats: int) -> dict[str, Any]:
    http = api.http
    live = []
    for _ in range(repeats):
        began = time.perf_counter()
        r = http.get(f"/sessions/{sid}/points", params={"limit": 10})
        live.append(time.perf_counter() - began)
        r.raise_for_status()
    cold = []
    for _ in range(repeats):
        api.long(f"/sessions/{sid}/offload")
        assert http.get(f"/sessions/{sid}").json()["storage"] == "offloaded"
        began = time.perf_counter()
        r = http.get(
            f"/sessions/{sid}/points", params={"limit": 10}, headers={"Prefer": "wait=300"}
        )
        cold.append(time.perf_counter() - began)
        if r.status_code != 200 or len(r.json()["points"]) != 10:
            raise RuntimeError(f"first use answered {r.status_code}: {r.text[:300]}")
    median_live_ms = statistics.median(live) * 1000
    log(f"first use: median {statistics.median(cold):.3f} s, live {median_live_ms:.1f} ms")
    return {"cold_s": cold, "live_s": live}


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, dim = args.points, args.dim
    out: dict[str, Any] = {"machine": machine_facts(), "code": snapshot_code(work / "code")}
    out["other_load_at_start_cores"] = other_load()
    dev = DevStack(
        work / "data", work / "code", work / "dev.log", {"VECTOR_INDEX_MIN_POINTS": NO_INDEX}
    )
    with dev:
        out["dev_start_s"] = dev.start()
        api = Api(dev.url)
        sid = api.create_session("cold-source", dim)
        seeded = seed_session(api, sid, args.seed, 0, n, dim)
        log(f"seeded {n} through PUT /points at {n / seeded:,.0f} points/s")
        collection = api.http.get(f"/sessions/{sid}").json()["qdrant_collection_name"]
        shard = work / "data" / "vectors" / collection

        rows = []
        export = timed(api, dev, "service export", f"/sessions/{sid}/exports", {}, n)
        export_id = export["answer"]["export_id"]
        rows.append(export)
        rows.append(
            timed(api, dev, "service import", "/sessions/import", {"export_id": export_id}, n)
        )
        out["export_artifact"] = disk(work / "data" / "exports" / f"{export_id}.ndjson.gz")
        out["live_shard"] = disk(shard)
        out["rss_before_offload"] = idle_memory(dev.pid)
        offload = timed(api, dev, "offload", f"/sessions/{sid}/offload", {}, n)
        rows.append(offload)
        offloaded = api.http.get("/sessions/offloaded").json()
        [entry] = [r for r in offloaded if r["session_id"] == sid]
        out["offload_artifact"] = disk(work / "data" / "exports" / entry["artifact_key"])
        out["shard_after_offload_exists"] = shard.exists()
        out["rss_after_offload"] = idle_memory(dev.pid)
        rows.append(timed(api, dev, "reload", f"/sessions/{sid}/reload", {}, n))
        out["checked_points"] = check_points(api.http, sid, args.seed, n, dim)
        out["rows"] = rows

        small = api.create_session("first-use", dim)
        seed_session(api, small, args.seed + 1, 0, args.first_use_points, dim)
        out["first_use"] = first_use(api, small, args.repeats)
        api.close()
    return out


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(r: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        f"Offload and reload of {r['points']:,} x {r['dim']} beside export and import of the same "
        f"session (code `{r['code']['git_head']}`, {r['total_s'] / 60:.1f} min).",
        "",
        row("step (in run order)", "seconds", "points/s", "RssAnon growth MB", "other CPU (cores)"),
        row("---", "---:", "---:", "---:", "---:"),
    ]
    for x in r["rows"]:
        lines.append(
            row(
                x["name"],
                f"{x['seconds']:.2f}",
                f"{x['points_per_s']:,.0f}",
                f"{x['memory']['anon_growth_mb']:.0f}",
                f"{x['cpu']['other_cores']:.2f}",
            )
        )
    acts = "; ".join(f"{x['name']} {x['history']['activities_s']}" for x in r["rows"])
    lines += ["", f"Activities (s): {acts}."]
    shard, art = r["live_shard"], r["offload_artifact"]
    lines += [
        "",
        row("disk", "allocated MB", "apparent MB", "files"),
        row("---", "---:", "---:", "---:"),
        row(
            "live collection (Edge shard dir)",
            f"{shard['allocated'] / mb:.1f}",
            f"{shard['apparent'] / mb:.1f}",
            shard["files"],
        ),
        row(
            "offload artifact",
            f"{art['allocated'] / mb:.1f}",
            f"{art['apparent'] / mb:.1f}",
            art["files"],
        ),
        row(
            "export artifact (same format)",
            f"{r['export_artifact']['allocated'] / mb:.1f}",
            f"{r['export_artifact']['apparent'] / mb:.1f}",
            1,
        ),
        "",
        "Shard directory after the offload: "
        f"{'present' if r['shard_after_offload_exists'] else 'gone'}. "
        f"Dev process (idle) before the offload: RssAnon "
        f"{r['rss_before_offload']['RssAnon'] / 2**20:.0f} MiB, VmRSS "
        f"{r['rss_before_offload']['VmRSS'] / 2**20:.0f} MiB; after: RssAnon "
        f"{r['rss_after_offload']['RssAnon'] / 2**20:.0f} MiB, VmRSS "
        f"{r['rss_after_offload']['VmRSS'] / 2**20:.0f} MiB. After the reload "
        f"{r['checked_points']:,} points matched the generator.",
    ]
    fu = r["first_use"]
    cold = fu["cold_s"]
    lines += [
        "",
        f"First use of an offloaded {r['first_use_points']:,}-point session "
        f"(`GET /points?limit=10`, {len(cold)} runs): median {statistics.median(cold):.2f} s, "
        f"min {min(cold):.2f} s, max {max(cold):.2f} s; the same read of the live session: "
        f"median {statistics.median(fu['live_s']) * 1000:.1f} ms.",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="a multiple of 1,000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--first-use-points", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="5,000 and 2,000 points")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return report.options(p)


def run(args: argparse.Namespace, argv: list[str]) -> list[report.Result]:
    if args.quick:
        args.points, args.first_use_points, args.repeats = 5000, 2000, 3
    began = time.monotonic()
    with workdir("sscold-", args.keep) as work:
        out = bench(args, work)
    out.update(
        command=report.command("bench.cold", argv),
        points=args.points,
        dim=args.dim,
        first_use_points=args.first_use_points,
        total_s=time.monotonic() - began,
    )
    report.save("cold", out, markdown(out))
    if out["checked_points"] != args.points or out["shard_after_offload_exists"]:
        left = out["shard_after_offload_exists"]
        raise report.CheckFailed(f"cold: {out['checked_points']} points back, shard left: {left}")
    rate = {r["name"]: r["points_per_s"] for r in out["rows"]}
    n = f"{args.points // 1000}k"
    targets = [
        report.target(
            f"cold: offload vs export ({n}), points/s", rate["offload"] / rate["service export"]
        ),
        report.target(
            f"cold: reload vs import ({n}), points/s", rate["reload"] / rate["service import"]
        ),
        report.target(
            f"cold: artifact vs live shard on disk ({n})",
            out["offload_artifact"]["allocated"] / out["live_shard"]["allocated"],
        ),
        report.target(
            f"cold: first use of an offloaded {args.first_use_points // 1000}k session, median",
            statistics.median(out["first_use"]["cold_s"]),
            unit="s",
        ),
    ]
    return report.results(targets, out["command"], out["code"], args.quick)


if __name__ == "__main__":
    raise SystemExit(report.main(sys.modules[__name__]))
