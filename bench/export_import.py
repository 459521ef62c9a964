"""Export/import benchmark: 200,000 points of 384 dimensions exported to an artifact and
imported back, side by side with raw qdrant-client loops on the same Qdrant.

The issue asks for "points/s, ratios, artifact size and peak RSS growth. Target: at
least 0.8x the raw loops and flat memory (growth under 150 MB)". What runs:

1. The real embedded stack (``session-service dev``: Postgres, Temporal, and one
   Python process with the API and the worker sharing one local-mode Qdrant client)
   from a frozen copy of ``session_service/``, on free loopback ports and a fresh
   data dir. One session is created through the API; its collection is then seeded
   offline (stack stopped) by a child process with qdrant-client on the same folder,
   which is itself a raw upsert loop and is reported as one.
2. Export: ``POST /sessions/{id}/exports`` (``Prefer: respond-async``) and poll the
   operation. Points/s use the operation's own start and close times (Temporal);
   the artifact is then checked independently (point lines, trailer count, SHA-256).
3. Import of that export (``POST /sessions/import {"export_id"}``): validation (the
   whole artifact read once) then the upsert (read again), as one operation; the
   imported session must hold every point.
   For both, the dev process's RSS is sampled every 50 ms, growth is relative to its
   idle RSS just before the POST; activity times come from the workflow history.
4. The stack stops; each raw loop runs in a fresh child process on the same folder
   (one client per folder in local mode), batch 1024, RSS growth measured from after
   the client opened the folder (opening loads every stored point): ``scroll`` (the
   export's reference, as the issue says), ``scroll_write`` (the same plus the
   artifact's JSON lines, gzip member per batch and SHA-256: what the export must do
   at least; also at gzip level 1, with compression on a second thread and with
   bigger scroll batches, to show what a change in the service would buy),
   ``upsert`` of the same generated points into a new collection (the import's
   reference) and ``upsert_artifact`` (the artifact parsed and upserted, also with the
   next batch parsed ahead on a second thread).

If the import fails (``validate_import`` does not heartbeat, so a validation longer
than ``OP_HEARTBEAT_TIMEOUT_SECONDS`` times out on every attempt), the failure is
recorded and the stack restarts with ``--fallback-heartbeat`` to measure the import.

In local mode a collection lives in the process's RAM (vectors as float32 in numpy
arrays that double when full, plus payloads and ids), so an import must grow by
about what the raw upsert loop grows by; the import's own overhead is the
difference, and that is what the 150 MB target is read against.

Run: ``.venv/bin/python -m bench.export_import`` (``--points 5000`` for a quick check;
``--no-variants`` keeps only the two reference loops; ``--profile`` adds one export and
one import under py-spy, not counted in the numbers).
Results go to ``bench/results/export_import.json`` and a Markdown table to stdout.
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

from bench.export_import_profile import PySpy
from bench.export_import_raw import DIM, RawRun, run_raw
from bench.export_import_report import evaluate, markdown
from bench.export_import_service import (
    OpRun,
    activity_timings,
    check_artifact,
    create_session,
    points_count,
    run_operation,
)
from bench.export_import_stack import (
    MB,
    DevStack,
    child_env,
    free_port,
    log,
    machine_facts,
    snapshot_code,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STATE = "bench-state.json"
HEARTBEAT_ENV = "OP_HEARTBEAT_TIMEOUT_SECONDS"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.export_import", description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1024, help="OP_BATCH_SIZE and raw batches")
    parser.add_argument("--data-dir", type=Path, help="default: a new /tmp/ssxi-XXXX")
    parser.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    parser.add_argument(
        "--write-variants",
        default="l6,l6-compress,l1,l1-compress,l1-compress@4096",
        help="raw scroll + write loops: gzip level (l1 is the service's), then optionally "
        "-encode or -compress (that part on a second thread) and @BATCH",
    )
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="only the reference raw loops (scroll, upsert): no scroll + write variants, no "
        "upsert from the artifact (a 200k run takes ~15-20 min instead of ~55)",
    )
    parser.add_argument(
        "--export-batch", type=int, help="EXPORT_BATCH_SIZE of the stack (default: unset)"
    )
    parser.add_argument("--profile", action="store_true", help="one more export/import, py-spy'd")
    parser.add_argument(
        "--no-prefetch", action="store_true", help="skip the parse-ahead raw upsert variant"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, help=f"{HEARTBEAT_ENV} of the stack (default: unset)"
    )
    parser.add_argument(
        "--fallback-heartbeat",
        type=float,
        default=600.0,
        help=f"if the import fails, restart with this {HEARTBEAT_ENV} and import again (0: don't)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "export_import.json")
    return parser.parse_args(argv)


# the stack and the seeded session


def new_stack(
    data_dir: Path, batch: int, heartbeat: float | None = None, export_batch: int | None = None
) -> DevStack:
    code = data_dir / "code"
    extra = {"OP_BATCH_SIZE": str(batch), "LOG_FORMAT": "json"}
    if heartbeat:
        extra[HEARTBEAT_ENV] = str(heartbeat)
    if export_batch:
        extra["EXPORT_BATCH_SIZE"] = str(export_batch)
    env = child_env(extra, pythonpath=code)
    return DevStack(data_dir, code, data_dir / "dev.log", env)


def raw_env() -> dict[str, str]:
    return child_env()


def seed(data_dir: Path, points: int, batch: int) -> dict[str, Any]:
    """Create the session through the API, then fill its collection offline."""
    state_file = data_dir / STATE
    if state_file.exists():
        state: dict[str, Any] = json.loads(state_file.read_text())
        if state.get("points") == points:
            log(f"reusing the seeded session {state['session_id']} in {data_dir}")
            return state
        raise SystemExit(f"{data_dir} holds a seed of {state.get('points')} points, not {points}")
    stack = new_stack(data_dir, batch)
    stack.start()
    try:
        session = create_session(stack, "export-import bench", DIM)
    finally:
        stack.stop()
    collection = session["qdrant_collection_name"]
    log(f"seeding {points} points into {collection} offline (~{points / 800 / 60:.0f} min)")
    argv = ["--path", str(data_dir / "qdrant"), "--collection", collection, "--keep"]
    argv += ["--points", str(points), "--batch", str(batch)]
    run = run_raw("upsert", argv, REPO, raw_env())
    state = {
        "session_id": session["id"],
        "collection": collection,
        "points": points,
        "seed": raw_view(run, points),
    }
    state_file.write_text(json.dumps(state, indent=2))
    return state


# views


def growth(before: int, peak: int, max_rise: int, after: int) -> dict[str, float]:
    """RSS growth in MB; ``rss_growth_mb`` (the one judged) is the larger of the peak over
    the idle baseline and the largest rise over a preceding low (see ``RssSampler``)."""
    return {
        "rss_peak_over_baseline_mb": round((peak - before) / MB, 1),
        "rss_max_rise_mb": round(max_rise / MB, 1),
        "rss_growth_mb": round(max(peak - before, max_rise) / MB, 1),
        "rss_after_growth_mb": round((after - before) / MB, 1),
    }


def raw_view(run: RawRun, points: int) -> dict[str, Any]:
    seconds = float(run.result["seconds"])
    return {
        "mode": run.mode,
        **run.result,
        "points_per_s": round(points / seconds, 1),
        "open_seconds": run.open_seconds,
        "rss_before_mb": round(run.rss_before / MB, 1),
        **growth(run.rss_before, run.rss_peak, run.rss_max_rise, run.rss_after),
        "cpu": run.cpu,
    }


def op_view(run: OpRun, points: int, activities: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operation_id": run.operation["id"],
        "result": run.operation.get("result"),
        "server_seconds": round(run.server_seconds, 3),
        "client_seconds": round(run.client_seconds, 3),
        "points_per_s": round(points / run.server_seconds, 1),
        "activities": activities,
        "phases_seen_at": run.phases,
        "poll_latency": run.poll_latency,
        "rss_before_mb": round(run.rss_before / MB, 1),
        **growth(run.rss_before, run.rss_peak, run.rss_max_rise, run.rss_after),
        "rss_series_mb": run.rss_series,
        "cpu": run.cpu,
    }


# the service's runs


def service_runs(
    stack: DevStack, state: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sid, points = state["session_id"], args.points
    out["start_seconds"] = round(stack.start(), 1)
    out["seeded_points_seen"] = points_count(stack, sid)
    log(f"stack up in {out['start_seconds']}s; session holds {out['seeded_points_seen']} points")

    log("export (measured)")
    exp = run_operation(stack, f"/sessions/{sid}/exports", None)
    out["export"] = op_view(exp, points, activity_timings(stack, exp.operation["id"]))
    if exp.status != "succeeded":
        raise RuntimeError(f"export {exp.status}: {exp.operation.get('error')}")
    export_id = exp.operation["result"]["export_id"]
    log(f"export: {out['export']['server_seconds']}s, {out['export']['points_per_s']} points/s")

    log("import (measured)")
    imp = run_operation(stack, "/sessions/import", {"export_id": export_id})
    view = op_view(imp, points, activity_timings(stack, imp.operation["id"]))
    if imp.status != "succeeded":
        out["import_failed"] = {**view, "heartbeat_timeout": stack.env.get(HEARTBEAT_ENV)}
        log(f"import {imp.status}: {imp.operation.get('error')}")
        if not args.fallback_heartbeat:
            raise RuntimeError(f"import {imp.status}: {imp.operation.get('error')}")
        restart(stack, {HEARTBEAT_ENV: str(args.fallback_heartbeat)})
        log(f"import again with {HEARTBEAT_ENV}={args.fallback_heartbeat} (measured)")
        imp = run_operation(stack, "/sessions/import", {"export_id": export_id})
        view = op_view(imp, points, activity_timings(stack, imp.operation["id"]))
        if imp.status != "succeeded":
            raise RuntimeError(f"import {imp.status}: {imp.operation.get('error')}")
    out["import"] = view
    out["import"]["heartbeat_timeout"] = stack.env.get(HEARTBEAT_ENV, "default")
    out["import"]["imported_points"] = points_count(stack, imp.operation["result"]["id"])
    log(f"import: {out['import']['server_seconds']}s, {out['import']['points_per_s']} points/s")

    if args.profile:
        out["profile"] = profile_runs(stack, sid, export_id, RESULTS)
    return out


def restart(stack: DevStack, env: dict[str, str]) -> None:
    """Stop the stack and start it again, on new ports, with ``env`` added."""
    stack.stop()
    stack.env.update(env)
    stack.port, stack.temporal_port = free_port(), free_port()
    log(f"restarted in {stack.start():.1f}s")


def profile_runs(stack: DevStack, sid: str, export_id: str, out_dir: Path) -> dict[str, Any]:
    """One more export and import with py-spy attached (not the measured runs)."""
    result: dict[str, Any] = {}
    for name, path, body in (
        ("export", f"/sessions/{sid}/exports", None),
        ("import", "/sessions/import", {"export_id": export_id}),
    ):
        log(f"{name} under py-spy")
        with PySpy(stack.pid, out_dir / f"export_import-{name}-pyspy.txt") as spy:
            run = run_operation(stack, path, body)
        result[name] = {"server_seconds": round(run.server_seconds, 1), **spy.summary()}
    return result


# the raw loops


def variant_argv(variant: str) -> list[str]:
    """``l1-compress@2048`` -> ``--level 1 --thread compress --batch 2048``."""
    spec, _, batch = variant.partition("@")
    level, _, thread = spec.partition("-")
    argv = ["--level", level.lstrip("l"), "--thread", thread or "none"]
    return [*argv, "--batch", batch] if batch else argv


def raw_runs(
    data_dir: Path,
    state: dict[str, Any],
    artifact: Path,
    points: int,
    batch: int,
    variants: list[str],
    prefetch: bool,
    from_artifact: bool = True,
) -> dict[str, Any]:
    base = ["--path", str(data_dir / "qdrant"), "--collection", state["collection"]]
    base += ["--batch", str(batch)]
    runs: dict[str, Any] = {}
    log("raw scroll")
    runs["scroll"] = raw_view(run_raw("scroll", base, REPO, raw_env()), points)
    for variant in variants:
        log(f"raw scroll + write ({variant})")
        out = data_dir / f"raw-scroll-write-{variant}.ndjson.gz"
        argv = [*base, "--out", str(out), *variant_argv(variant)]
        runs[f"scroll_write_{variant}"] = raw_view(
            run_raw("scroll_write", argv, REPO, raw_env()), points
        )
        out.unlink(missing_ok=True)
    log("raw upsert (generated points)")
    argv = [*base, "--points", str(points)]
    runs["upsert"] = raw_view(run_raw("upsert", argv, REPO, raw_env()), points)
    if not from_artifact:
        return runs
    log("raw upsert (points read from the artifact)")
    argv = [*base, "--artifact", str(artifact)]
    runs["upsert_artifact"] = raw_view(run_raw("upsert_artifact", argv, REPO, raw_env()), points)
    if prefetch:
        log("raw upsert (points read from the artifact, parsed ahead on a second thread)")
        argv.append("--prefetch")
        runs["upsert_artifact_prefetch"] = raw_view(
            run_raw("upsert_artifact", argv, REPO, raw_env()), points
        )
    return runs


# main


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "command": "python -m bench.export_import " + " ".join(sys.argv[1:]),
        "points": args.points,
        "dim": DIM,
        "batch": args.batch,
        "machine": machine_facts(),
        "code": snapshot_code(REPO, data_dir / "code"),
        "data_dir": str(data_dir),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    began = time.monotonic()
    state = seed(data_dir, args.points, args.batch)
    results["seed"] = state["seed"]
    stack = new_stack(data_dir, args.batch, args.heartbeat_timeout, args.export_batch)
    try:
        results["service"] = service_runs(stack, state, args)
    except BaseException:
        log(f"dev log tail:\n{stack.tail()}")
        raise
    finally:
        results["stop_exit_code"] = stack.stop()
    export_id = results["service"]["export"]["result"]["export_id"]
    artifact = data_dir / "exports" / f"{export_id}.ndjson.gz"
    log("checking the artifact")
    results["artifact"] = check_artifact(artifact)
    variants = [x.strip() for x in args.write_variants.split(",") if x.strip()]
    if args.no_variants:
        variants = []
    results["raw"] = raw_runs(
        data_dir,
        state,
        artifact,
        args.points,
        args.batch,
        variants,
        not args.no_prefetch,
        from_artifact=not args.no_variants,
    )
    results["evaluation"] = evaluate(results)
    results["total_seconds"] = round(time.monotonic() - began, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ssxi-", dir="/tmp"))
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log(f"data dir {data_dir}")
    try:
        results = run(args, data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    report = markdown(results)
    args.output.with_suffix(".md").write_text(report)
    print(report)
    log(f"results in {args.output}")
    return 0 if results["evaluation"]["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
