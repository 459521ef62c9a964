"""Retention sweep benchmark: sessions evaluated per second, and history length per run.

The issue asks for "a sweep over 10,000 sessions (mixed ages): sessions evaluated per
second and the history length of the longest run. Target: at least 500 sessions/s
evaluated; history bounded." The real embedded stack (``bench.stack``) is started, session
rows are seeded straight into Postgres (creating 10,000 collections through the API would
dominate and isn't what's measured; their collections don't exist, which DeleteWorkflow's
``drop_collection`` accepts), and each sweep goes through the API
(``POST /sessions/cleanup``, ``Prefer: respond-async``):

* a dry run and a real run over ``--sessions`` (10 % old enough to delete, 25 % to
  archive; permanent deletes go through DeleteWorkflow children);
* dry runs at ``--compare-sessions`` (default 20,000 and 200,000): the longest run's
  history must not grow with the number of sessions, and the ids a dry run carries must
  stay under Temporal's 2 MiB payload limit.

Rate = sessions processed / (last run's close - first run's start), read from Temporal
(``GET /operations/{id}`` times only the latest run of a continued-as-new chain). Every
run's history is fetched (events, bytes, input bytes) and the delete phase is split from
the archive phase at the first empty ``evaluate_page``. Beside each sweep a baseline does
the evaluation without Temporal in this process (``retention_page`` + the rules): what the
orchestration costs; each sweep's decisions must equal the baseline's.

Run: ``.venv/bin/python -m bench.retention`` (~3 min); ``--quick``: 2,000 sessions, no
comparison sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecution, WorkflowFailureError

from bench import report
from bench.sampling import CpuWindow
from bench.stack import DevStack, log, machine_facts, snapshot_code, workdir
from session_service.domain.retention_rules import RetentionRules, evaluation
from session_service.stores.postgres import create_pool
from session_service.stores.retention_rows import RetentionRows
from session_service.temporal import steps

TARGET_PER_SECOND = 500.0
PAGE_SIZE = 500  # RetentionInput.page_size's default: what the API's sweeps use
POLICY = {  # the POST /sessions/cleanup body of every sweep
    "max_age_days": 365,
    "max_sessions_per_user": 20,
    "auto_archive_inactive_days": 30,
    "auto_delete_archived_days": 90,
}
RULES = RetentionRules.model_validate(POLICY)
# kind -> (status, created days ago, updated days ago, share in percent): the issue's
# "mixed ages". Ages keep clear of the policy's edges, so clock drift changes nothing.
KINDS: dict[str, tuple[str, tuple[int, int], tuple[int, int], float]] = {
    "fresh_active": ("active", (1, 300), (0, 25), 60),  # keep
    "inactive_active": ("active", (40, 300), (35, 200), 20),  # archive
    "too_old_active": ("active", (400, 900), (0, 25), 3),  # archive
    "fresh_shared": ("shared", (1, 300), (0, 25), 2),  # keep
    "recent_archived": ("archived", (40, 300), (1, 80), 3),  # keep
    "old_archived": ("archived", (100, 900), (95, 400), 10),  # delete
    "old_soft_deleted": ("deleted", (100, 900), (95, 400), 1),  # delete
    "recent_soft_deleted": ("deleted", (40, 300), (1, 80), 1),  # keep
}
HEAVY_OWNER_SESSIONS = 40  # fresh sessions of each heavy owner (quota 20: 20 archived)
PER_10K_HEAVY_OWNERS, PER_10K_HELD = 10, 10  # held: locked by another operation


async def seed(dsn: str, n: int, rng_seed: int = 7) -> dict[str, int]:
    """Replace every session with ``n`` rows of the mix (deterministic per seed)."""
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    kinds = [k for k, spec in KINDS.items() for _ in range(round(n * spec[3] / 100))]
    kinds = (kinds + ["fresh_active"] * n)[:n]
    rng.shuffle(kinds)
    heavy = max(1, n * PER_10K_HEAVY_OWNERS // 10_000)
    heavy_slots = heavy * HEAVY_OWNER_SESSIONS
    rows = []
    for i, kind in enumerate(kinds):
        status, c_days, u_days, _ = KINDS[kind]
        sid = uuid.UUID(int=rng.getrandbits(128), version=4)
        u_ago = rng.uniform(*u_days)
        c_ago = max(rng.uniform(*c_days), u_ago)
        owner: str | None = f"user-{rng.randrange(max(1, n // 10))}"  # ~10 each: under quota
        if kind == "fresh_active" and heavy_slots > 0:
            heavy_slots -= 1
            owner = f"heavy-{heavy_slots % heavy}"
        elif rng.random() < 0.01:
            owner = None
        created, updated = now - timedelta(days=c_ago), now - timedelta(days=u_ago)
        rows.append([sid, f"bench session {i}", status, owner, f"session_{sid.hex}",
                     created, updated, None])  # fmt: skip
    held = max(1, n * PER_10K_HELD // 10_000)
    for i in rng.sample(range(n), min(held, n)):
        rows[i][7] = "bench-held-elsewhere"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE sessions, retention_archived CASCADE")
        await conn.execute(
            """INSERT INTO sessions (id, name, status, owner_id, qdrant_collection_name,
                                     configuration, created_at, updated_at, locked_by)
               SELECT id, name, status, owner_id, coll, $9::jsonb, created, updated, locked
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::timestamptz[], $7::timestamptz[], $8::text[])
                    AS t(id, name, status, owner_id, coll, created, updated, locked)""",
            *map(list, zip(*rows, strict=True)),
            '{"vector_size": 384, "distance": "Cosine"}',
        )
        await conn.execute("VACUUM ANALYZE sessions")
    finally:
        await conn.close()
    return {"sessions": n, "heavy_owners": heavy, "held": held}


async def baseline(dsn: str) -> dict[str, Any]:
    """One evaluation pass without Temporal, as a dry run does: the decisions a sweep must
    make, and how fast the same SQL and rules go in one process."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    retention, op = RetentionRows(pool), f"bench-baseline-{uuid.uuid4().hex}"
    counts = dict.fromkeys(("processed", "archived", "deleted", "locked"), 0)
    now, after, began = datetime.now(UTC), None, time.perf_counter()
    try:
        while True:
            result = evaluation(await retention.page(op, after, PAGE_SIZE), RULES, now)
            if not result.processed:
                break
            counts["processed"] += result.processed
            counts["archived"] += len(result.archive)
            counts["deleted"] += len(result.delete)
            counts["locked"] += len(result.locked_archive) + len(result.locked_delete)
            after = result.last_id
    finally:
        await pool.close()
    seconds = time.perf_counter() - began
    return counts | {"seconds": round(seconds, 4), "per_s": round(counts["processed"] / seconds)}


async def wait_for(client: Client, op_id: str, timeout: float) -> str | None:
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
            attempt = (await handle.describe()).raw_description.pending_workflow_task.attempt
            if attempt >= 5 or time.monotonic() > deadline:
                why = f"workflow task attempt {attempt}" if attempt >= 5 else f"over {timeout}s"
                await handle.terminate(reason=f"bench.retention: {why}")
                return why
    finally:
        done.cancel()


async def chain(client: Client, workflow_id: str, timeout: float = 60) -> list[WorkflowExecution]:
    """Every run of ``workflow_id``, oldest first, once visibility lists the whole
    continue-as-new chain with its last run closed."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        runs.sort(key=lambda w: w.start_time)
        statuses = [w.status.name if w.status else "" for w in runs]
        if (
            runs
            and all(w.close_time is not None for w in runs)
            and statuses[:-1] == ["CONTINUED_AS_NEW"] * (len(runs) - 1)
            and statuses[-1] != "CONTINUED_AS_NEW"
        ):
            return runs
        if time.monotonic() > deadline:
            raise RuntimeError(f"visibility never listed the whole chain of {workflow_id}")
        await asyncio.sleep(0.5)


async def history(client: Client, workflow_id: str) -> dict[str, Any]:
    """The runs of one operation: events and bytes of each, total time, phases."""
    per_run: list[dict[str, Any]] = []
    empty_pages: list[datetime] = []
    start = end = None
    for w in await chain(client, workflow_id):
        handle = client.get_workflow_handle(workflow_id, run_id=w.run_id)
        events = (await handle.fetch_history()).events
        names: dict[int, str] = {}
        for e in events:
            if e.HasField("activity_task_scheduled_event_attributes"):
                names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            elif e.HasField("activity_task_completed_event_attributes"):
                attrs = e.activity_task_completed_event_attributes
                payloads = list(attrs.result.payloads)
                if names[attrs.scheduled_event_id] == steps.EVALUATE_PAGE.name and payloads:
                    if json.loads(payloads[0].data).get("processed") == 0:
                        empty_pages.append(e.event_time.ToDatetime())
        first, last = events[0].event_time.ToDatetime(), events[-1].event_time.ToDatetime()
        start, end = start or first, last
        started = events[0].workflow_execution_started_event_attributes
        per_run.append({
            "events": len(events),
            "bytes": sum(e.ByteSize() for e in events),
            "input_bytes": sum(len(p.data) for p in started.input.payloads),
            "seconds": round((last - first).total_seconds(), 3),
        })  # fmt: skip
    assert start is not None and end is not None
    split = empty_pages[0] if empty_pages else end
    phases = {"archive_or_evaluate_s": round((split - start).total_seconds(), 3)}
    if len(empty_pages) > 1:
        phases["delete_s"] = round((end - split).total_seconds(), 3)
    return {
        "runs": len(per_run),
        "seconds": round((end - start).total_seconds(), 3),
        "phases_s": phases,
        "longest_run_events": max(r["events"] for r in per_run),
        "largest_run_bytes": max(r["bytes"] for r in per_run),
        "largest_run_input_bytes": max(r["input_bytes"] for r in per_run),
        "per_run": per_run,
    }


async def sweep(
    dev: DevStack, http: httpx.AsyncClient, client: Client, n: int, dry: bool, timeout: float
) -> dict[str, Any]:
    """Seed ``n`` sessions, take the baseline, sweep them through the API; the figures."""
    label = f"{'dry' if dry else 'real'} {n:,}"
    seeded = await seed(dev.dsn, n)
    base = await baseline(dev.dsn)
    log(f"[{label}] baseline {base['per_s']:,} sessions/s")
    with CpuWindow(contender=dev.pid) as window:
        r = await http.post("/sessions/cleanup", params={"dry_run": str(dry).lower()},
                            json=POLICY, headers={"Prefer": "respond-async"})  # fmt: skip
        if r.status_code != 202:
            raise RuntimeError(f"cleanup answered {r.status_code}: {r.text[:500]}")
        op_id = str(r.json()["id"])
        failure = await wait_for(client, op_id, timeout)
        cores = window.read()
    op = (await http.get(f"/operations/{op_id}")).json()
    out: dict[str, Any] = {"sessions": n, "dry_run": dry, "seeded": seeded, "baseline": base,
                           "operation_id": op_id, "status": op["status"], "failure": failure,
                           "cpu": cores,
                           "history": await history(client, op_id)}  # fmt: skip
    if op["status"] != "succeeded":
        out["problems"] = [f"{label}: operation {op['status']}: {op.get('error') or failure}"]
        return out
    stats = {k: v for k, v in op["result"]["cleanup_stats"].items() if not k.endswith("_ids")}
    seconds = out["history"]["seconds"]
    out |= {"cleanup_stats": stats, "sessions_per_s": round(stats["processed_count"] / seconds, 1)}
    phases = out["history"]["phases_s"]
    if stats.get("deleted_count") and "delete_s" in phases:
        out["deletes_per_s"] = round(stats["deleted_count"] / phases["delete_s"], 1)
    pairs = [("processed_count", "processed"), ("archived_count", "archived"),
             ("deleted_count", "deleted"), ("skipped_locked_count", "locked")]  # fmt: skip
    out["problems"] = [f"{label}: {s} {stats.get(s)} != baseline {base[b]}"
                       for s, b in pairs if stats.get(s) != base[b]]  # fmt: skip
    if stats.get("failed_count"):
        out["problems"].append(f"{label}: {stats['failed_count']} deletes failed")
    log(f"[{label}] {out['sessions_per_s']:,} sessions/s in {seconds}s")
    return out


async def run_all(dev: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    from temporalio.contrib.pydantic import pydantic_data_converter

    client = await Client.connect(dev.temporal_address, data_converter=pydantic_data_converter)
    sweeps: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=dev.url, timeout=60) as http:
        for n, dry in [(args.sessions, True), (args.sessions, False)] + [
            (m, True) for m in args.compare_sessions
        ]:
            name = f"{'dry run' if dry else 'real sweep'} {n:,}"
            sweeps[name] = await sweep(dev, http, client, n, dry, args.timeout)
    return sweeps


def markdown(sweeps: dict[str, Any]) -> str:
    lines = [
        "| scenario | archived | deleted | runs | longest run (events) | largest run (bytes) "
        "| seconds | sessions/s | deletes/s | baseline sessions/s | target (>= 500/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, s in sweeps.items():
        st, h = s.get("cleanup_stats", {}), s["history"]
        rate = s.get("sessions_per_s")
        met = "met" if rate and rate >= TARGET_PER_SECOND else "**missed**"
        lines.append(
            f"| {name} | {st.get('archived_count', '-')} | {st.get('deleted_count', '-')} "
            f"| {h['runs']} | {h['longest_run_events']} | {h['largest_run_bytes']:,} "
            f"| {h['seconds']} | {rate or s['status']} | {s.get('deletes_per_s', '-')} "
            f"| {s['baseline']['per_s']:,} | {met} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=10_000, help="sessions of the main sweeps")
    p.add_argument(
        "--compare-sessions",
        type=lambda text: [int(x) for x in text.split(",") if x.strip()],
        default=[20_000, 200_000],
        help="sizes of the extra dry runs, comma-separated (history vs size, payload limit)",
    )
    p.add_argument("--timeout", type=float, default=1_200.0, help="seconds per sweep")
    p.add_argument("--quick", action="store_true", help="2,000 sessions, no extra sizes")
    return report.options(p)


def run(args: argparse.Namespace, argv: list[str]) -> list[report.Result]:
    if args.quick:
        args.sessions, args.compare_sessions = 2_000, []
    with workdir("ssret-") as work:
        code = snapshot_code(work / "code")
        with DevStack(work / "data", work / "code", work / "dev.log") as dev:
            startup = dev.start()
            sweeps = asyncio.run(run_all(dev, args))
    out = {"machine": machine_facts(), "code": code, "policy": POLICY, "dev_start_s": startup}
    out["sweeps"] = sweeps
    report.save("retention", out, markdown(sweeps))
    problems = [p for s in sweeps.values() for p in s["problems"]]
    if problems:
        raise report.CheckFailed("; ".join(problems))
    dry, real = (sweeps[f"{k} {args.sessions:,}"] for k in ("dry run", "real sweep"))
    longest = max(s["history"]["longest_run_events"] for s in sweeps.values())
    targets = [
        report.target("retention: dry run", dry["sessions_per_s"],
                      at_least=TARGET_PER_SECOND, unit="sessions/s"),
        report.target("retention: real sweep", real["sessions_per_s"],
                      at_least=TARGET_PER_SECOND, unit="sessions/s"),
        report.target("retention: longest run's history, any size", longest, unit="events"),
    ]  # fmt: skip
    cmd = report.command("bench.retention", argv)
    return report.results(targets, cmd, code, args.quick)


if __name__ == "__main__":
    raise SystemExit(report.main(sys.modules[__name__]))
