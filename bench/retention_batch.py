"""Runs the page-batched prototype (``bench.retention_batch_workflow``) against the dev stack.

A worker in this process serves the prototype workflow and its one new activity,
``bench_delete_batch``: in one transaction, hold every selected session nobody
else holds (``locked_by``), then delete the held rows. The service's version
would drop each held session's collection (if present) between the two, exactly
as DeleteWorkflow's ``drop_collection`` does; the benchmark's sessions have no
collection, so that step is a no-op in both designs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import psutil
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.retention_batch_workflow import (
    BENCH_QUEUE,
    BatchedRetention,
    BatchInput,
    DeleteBatchInput,
    DeleteBatchResult,
)
from bench.retention_data import RULES, TARGET_PER_SECOND
from bench.retention_history import analyse
from bench.retention_stack import DevStack
from session_service.stores.repository import create_pool


class BatchSteps:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name="bench_delete_batch")
    async def delete_batch(self, inp: DeleteBatchInput) -> DeleteBatchResult:
        ids = [uuid.UUID(s) for s in inp.session_ids]
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                held = await conn.fetch(
                    """UPDATE sessions SET locked_by = $2
                       WHERE id = ANY($1::uuid[]) AND (locked_by IS NULL OR locked_by = $2)
                       RETURNING id, qdrant_collection_name""",
                    ids,
                    inp.operation_id,
                )
            # the service: drop_collection(row["qdrant_collection_name"]) for each held row
            await conn.execute(
                "DELETE FROM sessions WHERE id = ANY($1::uuid[]) AND locked_by = $2",
                ids,
                inp.operation_id,
            )
        mine = {str(r["id"]) for r in held}
        return DeleteBatchResult(
            deleted=len(mine), held=[s for s in inp.session_ids if s not in mine]
        )


async def run_batched(stack: DevStack, client: Client, timeout: float) -> dict[str, Any]:
    """One prototype sweep to completion; shaped like ``bench.retention.run_operation``."""
    pool = await create_pool(stack.dsn, min_size=1, max_size=4)
    me = psutil.Process()
    try:
        steps = BatchSteps(pool)
        async with Worker(
            client,
            task_queue=BENCH_QUEUE,
            workflows=[BatchedRetention],
            activities=[steps.delete_batch],
        ):
            cpu_before, mine_before = stack.cpu_seconds(), me.cpu_times()
            began = time.perf_counter()
            op_id = f"cleanup-bench-batched-{uuid.uuid4().hex}"
            handle = await client.start_workflow(
                BatchedRetention.run, BatchInput(rules=RULES), id=op_id, task_queue=BENCH_QUEUE
            )
            result = await asyncio.wait_for(handle.result(), timeout=timeout)
            wall = time.perf_counter() - began
            cpu_after, mine_after = stack.cpu_seconds(), me.cpu_times()
    finally:
        await pool.close()
    history = await analyse(client, op_id)
    ours = {k: round(sum(cpu_after.get(k, v)) - sum(v), 2) for k, v in cpu_before.items()}
    ours["bench process (prototype worker)"] = round(
        mine_after.user + mine_after.system - mine_before.user - mine_before.system, 2
    )
    seconds = float(history["seconds"])
    phases = history["phases_s"]
    out: dict[str, Any] = {
        "operation_id": op_id,
        "started": "prototype BenchBatchedRetention (not the service's workflow)",
        "dry_run": False,
        "status": "succeeded",
        "error": None,
        "client_wall_seconds": round(wall, 3),
        "seconds": seconds,
        "cpu_seconds_by_part": ours,
        "history": history,
        "cleanup_stats": {
            "archived_count": result.archived,
            "deleted_count": result.deleted,
            "processed_count": result.processed,
            "skipped_locked_count": result.skipped_locked,
            "failed_count": 0,
        },
        "sessions_per_second": round(result.processed / seconds, 1),
        "target_met": result.processed / seconds >= TARGET_PER_SECOND,
    }
    if "delete_s" in phases and result.deleted:
        out["archive_phase_sessions_per_second"] = round(
            result.processed / phases["archive_or_evaluate_s"], 1
        )
        out["deletes_per_second"] = round(result.deleted / phases["delete_s"], 2)
        out["cpu_ms_per_delete"] = {
            k: round(1000 * v / result.deleted, 1) for k, v in ours.items() if v > 0
        }
    return out
