"""Retention sweep benchmark: sessions evaluated per second, and history length per run.

The issue asks for "a sweep over 10,000 sessions (mixed ages): sessions evaluated
per second and the history length of the longest run. Target: at least 500
sessions/s evaluated; history bounded." This starts the real embedded stack
(``python -m session_service.cli dev``: Postgres, Temporal dev server, Qdrant
local mode, API + worker in one process, running a snapshot of
``session_service``) on free 127.0.0.1 ports, seeds session rows straight into
Postgres (see ``bench.retention_data``: creating collections through the API
would dominate and isn't what's measured), and sweeps them through the API
(``POST /sessions/cleanup``, ``Prefer: respond-async``):

* a dry run: evaluation only (pages of ``retention_page`` + the rules, carried
  across continue-as-new), the purest "sessions evaluated per second";
* a real run over the same mix (10 % old enough to delete): archive phase, then
  a delete phase where permanent deletes go through DeleteWorkflow children of
  up to ``delete_batch_size`` (200) sessions each, four at a time;
* a real run where only 1 % of sessions are old enough to delete, to separate
  the sweep's own rate from the cost of each child;
* experiments that say what a change would buy: the real run started directly
  with a larger ``delete_concurrency``, and the prototype workflow with one delete
  activity per page that led to the batched children (``bench.retention_batch``);
* dry runs at other sizes (``--compare-sessions``) and a real run at 2,000, to
  show whether the longest run's history grows with the number of sessions, and
  a dry-run probe large enough to show that a run's carried state stays bounded
  (a dry run lists at most 1,000 ids of each kind).

Rate = sessions processed (``cleanup_stats.processed_count``) / (last run's
close - first run's start), read from Temporal: ``GET /operations/{id}`` times
only the latest run of a continued-as-new chain. Every run's history is fetched
(events, bytes, input bytes), the delete phase is split from the archive phase
at the first empty ``evaluate_page``, a sample of DeleteWorkflow children is
profiled from their histories, and CPU seconds are read per process (Python
service, Temporal server, Postgres); ``--profile-seconds`` adds py-spy / perf
samples. Alongside each sweep a baseline does the same work without Temporal in
this process (``SessionRepository.retention_page`` + ``retention_rules.evaluation``,
and for real runs ``retention_archive``, ``lock`` + ``delete_held``), which shows
what the orchestration costs. Each sweep's decisions are checked against it.

Run: ``.venv/bin/python -m bench.retention`` (about 10 minutes); results go to
``bench/results/retention.json``. Every wait is bounded (``--timeout`` per sweep;
a workflow task that keeps failing ends the sweep early).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.retention_batch import run_batched
from bench.retention_data import (
    POLICY,
    RULES,
    TARGET_PER_SECOND,
    BaselineResult,
    baseline_evaluate,
    baseline_sweep,
    count_by_status,
    seed,
)
from bench.retention_history import (
    BLOB_BYTES_LIMIT,
    HISTORY_BYTES_LIMIT,
    HISTORY_EVENT_LIMIT,
    analyse,
)
from bench.retention_profile import profile_window
from bench.retention_stack import REPO, DevStack, log, source_facts, tree_digest
from session_service.operation_types import RetentionInput

RESULTS = Path(__file__).resolve().parent / "results" / "retention.json"


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()),
        "cpu_model": model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _baseline(b: BaselineResult) -> dict[str, Any]:
    out = asdict(b)
    out["seconds"] = round(b.seconds, 4)
    out["archive_phase_seconds"] = round(b.archive_phase_seconds, 4)
    out["delete_phase_seconds"] = round(b.delete_phase_seconds, 4)
    out["sessions_per_second"] = round(b.sessions_per_second, 1)
    if b.deleted and b.delete_phase_seconds:
        out["deletes_per_second"] = round(b.deleted / b.delete_phase_seconds, 1)
    return out


async def wait_for_result(client: Client, op_id: str, timeout: float) -> str | None:
    """None once the operation completes; else why not. A workflow task that keeps
    failing (Temporal retries it forever) ends the wait, and the workflow, early."""
    handle = client.get_workflow_handle(op_id)
    done = asyncio.ensure_future(handle.result())
    deadline = time.monotonic() + timeout
    try:
        while True:
            finished, _ = await asyncio.wait({done}, timeout=2.0)
            if finished:
                try:
                    done.result()
                    return None
                except WorkflowFailureError as exc:
                    return f"{exc}: {exc.cause}"
            desc = await handle.describe()
            attempt = desc.raw_description.pending_workflow_task.attempt
            if attempt >= 5 or time.monotonic() > deadline:
                why = (
                    f"workflow task failing (attempt {attempt})"
                    if attempt >= 5
                    else f"not done after {timeout}s"
                )
                await handle.terminate(reason=f"bench.retention: {why}")
                return why
    finally:
        done.cancel()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (all cores, everything running)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


async def start_via_api(http: httpx.AsyncClient, dry_run: bool) -> str:
    resp = await http.post(
        "/sessions/cleanup",
        params={"dry_run": "true" if dry_run else "false"},
        json=POLICY,
        headers={"Prefer": "respond-async"},
    )
    if resp.status_code != 202:
        raise RuntimeError(f"cleanup answered {resp.status_code}: {resp.text[:500]}")
    return str(resp.json()["id"])


async def start_direct(client: Client, overrides: dict[str, Any]) -> str:
    """The same workflow, started with non-default RetentionInput fields (an experiment:
    the API always uses the defaults)."""
    op_id = f"cleanup-bench-{uuid.uuid4().hex}"
    await client.start_workflow(
        "RetentionWorkflow",
        RetentionInput(rules=RULES, **overrides),
        id=op_id,
        task_queue="session-service",
    )
    return op_id


async def run_operation(
    stack: DevStack,
    http: httpx.AsyncClient,
    client: Client,
    *,
    dry_run: bool,
    timeout: float,
    overrides: dict[str, Any] | None = None,
    profile_seconds: float = 0.0,
) -> dict[str, Any]:
    """One sweep to completion (through ``POST /sessions/cleanup`` unless ``overrides``),
    then all its runs read back from Temporal."""
    cpu_before, busy_before = stack.cpu_seconds(), machine_busy_seconds()
    began = time.perf_counter()
    if overrides:
        op_id = await start_direct(client, {"dry_run": dry_run, **overrides})
    else:
        op_id = await start_via_api(http, dry_run)
    profiling = (
        asyncio.create_task(
            profile_window(stack.pid, delay=5.0, seconds=profile_seconds, out_dir=RESULTS.parent)
        )
        if profile_seconds > 0
        else None
    )
    failure = await wait_for_result(client, op_id, timeout)
    client_wall = time.perf_counter() - began
    cpu_after, busy_after = stack.cpu_seconds(), machine_busy_seconds()
    profile = await profiling if profiling is not None else None
    got = await http.get(f"/operations/{op_id}")
    got.raise_for_status()
    op = got.json()
    history = await analyse(client, op_id)
    ours = {k: round(sum(cpu_after.get(k, v)) - sum(v), 2) for k, v in cpu_before.items()}
    kernel = {k: round(cpu_after.get(k, v)[1] - v[1], 2) for k, v in cpu_before.items()}
    out: dict[str, Any] = {
        "operation_id": op_id,
        "started": "direct " + json.dumps(overrides) if overrides else "POST /sessions/cleanup",
        "dry_run": dry_run,
        "status": op["status"],
        "error": op.get("error"),
        "wait_failure": failure,
        "client_wall_seconds": round(client_wall, 3),
        "seconds": history["seconds"],
        "cpu_seconds_by_part": ours,
        "cpu_seconds_in_kernel_by_part": kernel,
        "machine_busy_cpu_seconds": round(busy_after - busy_before, 2),
        "others_cpu_seconds": round(busy_after - busy_before - sum(ours.values()), 2),
        "history": history,
    }
    if profile is not None:
        out["profile"] = profile
    if op["status"] != "succeeded":
        out["target_met"] = False
        return out
    stats = dict(op["result"]["cleanup_stats"])
    ids_carried = len(stats.pop("archived_ids", [])) + len(stats.pop("deleted_ids", []))
    processed = int(stats["processed_count"])
    seconds = float(history["seconds"])
    created, finished = _stamp(op.get("created_at")), _stamp(op.get("finished_at"))
    api_window = (finished - created).total_seconds() if created and finished else None
    phases = history["phases_s"]
    out.update(
        {
            "cleanup_stats": stats,
            "ids_in_dry_run_result": ids_carried,
            "get_operation_response_bytes": len(got.content),
            "sessions_per_second": round(processed / seconds, 1),
            "target_met": processed / seconds >= TARGET_PER_SECOND,
            "api_created_to_finished_seconds": api_window,
            "api_rate_if_naively_computed": (
                round(processed / api_window, 1) if api_window else None
            ),
        }
    )
    if "delete_s" in phases:
        out["archive_phase_sessions_per_second"] = round(
            processed / phases["archive_or_evaluate_s"], 1
        )
        if stats["deleted_count"]:
            deleted = int(stats["deleted_count"])
            out["deletes_per_second"] = round(deleted / phases["delete_s"], 2)
            out["cpu_ms_per_delete"] = {
                k: round(1000 * v / deleted, 1) for k, v in ours.items() if v > 0
            }
            out["parent_events_per_delete"] = round(
                sum(r["events"] for r in history["per_run"]) / deleted, 2
            )
    return out


def check(label: str, api: dict[str, Any], base: BaselineResult) -> list[str]:
    """The sweep and the baseline must have made the same decisions."""
    if api["status"] != "succeeded":
        return [f"{label}: operation {api['status']}: {api['error']}"]
    s = api["cleanup_stats"]
    problems = []
    if s["processed_count"] != base.sessions_evaluated:
        problems.append(f"{label}: processed {s['processed_count']} != {base.sessions_evaluated}")
    if s["archived_count"] != base.archived:
        problems.append(f"{label}: archived {s['archived_count']} != {base.archived}")
    if s["deleted_count"] != base.deleted:
        problems.append(f"{label}: deleted {s['deleted_count']} != {base.deleted}")
    if s["skipped_locked_count"] != base.set_aside_locked:
        problems.append(
            f"{label}: skipped_locked {s['skipped_locked_count']} != {base.set_aside_locked}"
        )
    if s.get("failed_count"):
        problems.append(f"{label}: {s['failed_count']} deletes failed: {s.get('failures')}")
    return problems


def _slowdown(base: BaselineResult, api: dict[str, Any]) -> float | None:
    rate = api.get("sessions_per_second")
    return round(base.sessions_per_second / rate, 1) if rate else None


async def scenario_dry(
    stack: DevStack,
    http: httpx.AsyncClient,
    client: Client,
    n: int,
    timeout: float,
    *,
    probe: bool = False,
) -> dict[str, Any]:
    seeded = await seed(stack.dsn, n, "standard")
    log(f"[dry {n}] seeded in {seeded.seconds}s: {seeded.kinds}")
    runs = [await baseline_evaluate(stack.dsn, datetime.now(UTC)) for _ in range(3)]
    base = sorted(runs, key=lambda b: b.seconds)[1]
    log(f"[dry {n}] baseline {base.sessions_per_second:.0f} sessions/s (median of 3)")
    api = await run_operation(stack, http, client, dry_run=True, timeout=timeout)
    log(f"[dry {n}] {api['status']}: {api.get('sessions_per_second')} sessions/s")
    return {
        "sessions": n,
        "seeded": asdict(seeded),
        "baseline": _baseline(base),
        "baseline_all_seconds": [round(b.seconds, 4) for b in runs],
        "api": api,
        "slowdown_vs_baseline": _slowdown(base, api),
        # a probe looks for the size where a dry run stops working: a failure is its answer
        "problems": [] if probe else check(f"dry {n}", api, base),
        "probe_findings": check(f"dry {n}", api, base) if probe else [],
    }


async def scenario_real(
    stack: DevStack,
    http: httpx.AsyncClient,
    client: Client,
    n: int,
    mix: str,
    timeout: float,
    *,
    overrides: dict[str, Any] | None = None,
    profile_seconds: float = 0.0,
) -> dict[str, Any]:
    label = f"real {n} {mix}" + (f" {overrides}" if overrides else "")
    await seed(stack.dsn, n, mix)
    base = await baseline_sweep(stack.dsn, datetime.now(UTC))
    log(f"[{label}] baseline {base.sessions_per_second:.0f} sessions/s in {base.seconds:.2f}s")
    seeded = await seed(stack.dsn, n, mix)  # the baseline changed the rows: same rows again
    before = await count_by_status(stack.dsn)
    api = await run_operation(
        stack,
        http,
        client,
        dry_run=False,
        timeout=timeout,
        overrides=overrides,
        profile_seconds=profile_seconds,
    )
    after = await count_by_status(stack.dsn)
    log(f"[{label}] {api['status']}: {api.get('sessions_per_second')} sessions/s")
    return {
        "sessions": n,
        "mix": mix,
        "seeded": asdict(seeded),
        "rows_by_status_before": before,
        "rows_by_status_after": after,
        "baseline": _baseline(base),
        "api": api,
        "slowdown_vs_baseline": _slowdown(base, api),
        "problems": check(label, api, base),
    }


async def scenario_batched(
    stack: DevStack, client: Client, n: int, timeout: float
) -> dict[str, Any]:
    """The prototype with one delete activity per page (what the suggested change buys)."""
    label = f"prototype batched deletes {n}"
    await seed(stack.dsn, n, "standard")
    base = await baseline_sweep(stack.dsn, datetime.now(UTC))
    seeded = await seed(stack.dsn, n, "standard")
    api = await run_batched(stack, client, timeout)
    log(f"[{label}] {api['sessions_per_second']} sessions/s in {api['seconds']}s")
    return {
        "sessions": n,
        "mix": "standard",
        "seeded": asdict(seeded),
        "baseline": _baseline(base),
        "api": api,
        "slowdown_vs_baseline": _slowdown(base, api),
        "problems": check(label, api, base),
    }


def summary(results: dict[str, Any]) -> str:
    lines = [
        "| scenario | sessions | archived | deleted | runs | longest run (events) "
        "| largest run (bytes) | seconds | sessions/s | deletes/s | baseline sessions/s "
        "| target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, sc in results["scenarios"].items():
        api, h = sc["api"], sc["api"]["history"]
        s = api.get("cleanup_stats", {})
        lines.append(
            f"| {name} | {sc['sessions']} | {s.get('archived_count', '-')} "
            f"| {s.get('deleted_count', '-')} | {h['runs']} | {h['longest_run_events']} "
            f"| {h['largest_run_bytes']} | {api['seconds']} "
            f"| {api.get('sessions_per_second', api['status'])} "
            f"| {api.get('deletes_per_second', '-')} "
            f"| {sc['baseline']['sessions_per_second']} "
            f"| {'met' if api['target_met'] else 'NOT met'} |"
        )
    return "\n".join(lines)


async def run_all(stack: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    client = await Client.connect(stack.temporal_address, data_converter=pydantic_data_converter)
    scenarios: dict[str, Any] = {}
    t = args.timeout
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        n = args.sessions
        scenarios[f"dry_{n}"] = await scenario_dry(stack, http, client, n, t)
        scenarios[f"real_{n}_standard"] = await scenario_real(
            stack, http, client, n, "standard", t, profile_seconds=args.profile_seconds
        )
        if not args.quick:
            scenarios[f"real_{n}_few_deletes"] = await scenario_real(
                stack, http, client, n, "few_deletes", t
            )
            for c in args.delete_concurrency:
                scenarios[f"real_{n}_standard_delete_concurrency_{c}"] = await scenario_real(
                    stack, http, client, n, "standard", t, overrides={"delete_concurrency": c}
                )
            if not args.no_prototype:
                scenarios[f"prototype_{n}_standard_batched_deletes"] = await scenario_batched(
                    stack, client, n, t
                )
        for m in args.compare_sessions:
            scenarios[f"dry_{m}"] = await scenario_dry(stack, http, client, m, t)
        for m in [] if args.quick else args.probe_dry_sessions:
            scenarios[f"probe_dry_{m}"] = await scenario_dry(stack, http, client, m, t, probe=True)
        for m in [] if args.quick else args.compare_real:
            scenarios[f"real_{m}_standard"] = await scenario_real(
                stack, http, client, m, "standard", t
            )
    histories = [sc["api"]["history"] for sc in scenarios.values()]
    return {
        "scenarios": scenarios,
        "longest_run_events_overall": max(h["longest_run_events"] for h in histories),
        "largest_run_bytes_overall": max(h["largest_run_bytes"] for h in histories),
        "largest_run_input_bytes_overall": max(h["largest_run_input_bytes"] for h in histories),
        "limits": {
            "history_events": HISTORY_EVENT_LIMIT,
            "history_bytes": HISTORY_BYTES_LIMIT,
            "payload_bytes": BLOB_BYTES_LIMIT,
        },
        "problems": [p for sc in scenarios.values() for p in sc["problems"]],
    }


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    p.add_argument("--sessions", type=int, default=10_000, help="sessions per main sweep")
    p.add_argument(
        "--compare-sessions",
        type=_sizes,
        default=[2_000, 20_000],
        help="other sizes for dry runs, comma-separated (history vs size; default 2000,20000)",
    )
    p.add_argument(
        "--compare-real",
        type=_sizes,
        default=[2_000],
        help="other sizes for real runs, comma-separated (default 2000)",
    )
    p.add_argument(
        "--probe-dry-sessions",
        type=_sizes,
        default=[200_000],
        help="dry runs big enough to check that the ids a dry run carries stay under Temporal's "
        "2 MiB payload limit (they are capped); a failure is reported as a finding "
        "(default 200000)",
    )
    p.add_argument(
        "--delete-concurrency",
        type=_sizes,
        default=[16],
        help="experiment: real runs started directly with these delete_concurrency values "
        "(the API uses 4); empty to skip",
    )
    p.add_argument(
        "--no-prototype",
        action="store_true",
        help="skip the prototype sweep with one delete activity per page",
    )
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=0.0,
        help="sample the service (py-spy) and Temporal (perf) this long during the main real run",
    )
    p.add_argument("--timeout", type=float, default=1_200.0, help="seconds per operation")
    p.add_argument("--quick", action="store_true", help="the dry runs and one real run only")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep-data", action="store_true", help="keep the stack's data dir")
    return p.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind, so that the stack is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    facts = machine()
    source = source_facts()
    log(f"machine: {facts}")
    log(f"source: {source}")
    stack = DevStack()
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    try:
        startup = stack.start()
        log(f"stack healthy in {startup:.1f}s (API {stack.url}, Temporal {stack.temporal_address})")
        results = asyncio.run(run_all(stack, args))
    except BaseException:
        log(stack.tail())
        raise
    finally:
        code = stack.stop()
        log(f"stack stopped (exit code {code})")
        if not args.keep_data:
            shutil.rmtree(stack.data_dir, ignore_errors=True)
    source["stack_ran_snapshot_digest"] = stack.source_digest
    source["working_tree_digest_at_end"] = tree_digest(REPO / "session_service")
    report = {
        "benchmark": "retention",
        "command": ".venv/bin/python -m bench.retention "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started_at.isoformat(),
        "total_seconds": round(time.perf_counter() - began, 1),
        "machine": facts,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "source": source,
        "policy": POLICY,
        "target_sessions_per_second": TARGET_PER_SECOND,
        "stack_startup_seconds": round(startup, 1),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(summary(results))
    print(f"\nresults: {args.out}")
    for problem in results["problems"]:
        print(f"PROBLEM: {problem}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
