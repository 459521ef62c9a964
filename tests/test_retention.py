"""Retention: every rule against sessions whose timestamps are set in the database, dry runs
(capped id lists), paging with continue-as-new, batched deletes (a failing drop, a failing
batch, a session taken by another operation), replay of old and new histories, the schedule,
and days passing in a workflow.

Each test sweeps a database of its own, so counts are exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from session_service.api.app import create_app
from session_service.cli.embedded_stack import EmbeddedPostgres, scripts_dir
from session_service.domain.retention_rules import RetentionRules
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import discovery, registry, steps
from session_service.temporal.activities import PointSteps, SessionSteps
from session_service.temporal.contracts import (
    DeleteRowsInput,
    DropCollectionsInput,
    HoldInput,
    HoldResult,
    RetentionInput,
)
from session_service.temporal.worker import build_worker, prepare, worker_of
from session_service.temporal.workflows.record import OperationRecord
from tests.conftest import Factory

# Recorded with the code of the day (tests/histories/README.md says how).
HISTORIES = Path(__file__).resolve().parent / "histories"

POLICY = {
    "max_age_days": 365,
    "max_sessions_per_user": 2,
    "auto_archive_inactive_days": 30,
    "auto_delete_archived_days": 90,
}


class RetentionStack:
    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client
        self.make = Factory(client)

    async def session(
        self,
        *,
        status: str = "active",
        updated_days: float = 0,
        created_days: float = 0,
        owner: str | None = None,
        locked_by: str | None = None,
    ) -> str:
        s = await self.make.session(owner_id=owner)
        await self.runtime.pool.execute(
            """UPDATE sessions SET status = $2,
                   updated_at = now() - make_interval(secs => $3),
                   created_at = now() - make_interval(secs => $4), locked_by = $5
               WHERE id = $1""",
            uuid.UUID(s["id"]),
            status,
            updated_days * 86400,
            created_days * 86400,
            locked_by,
        )
        return str(s["id"])

    async def statuses(self) -> dict[str, str]:
        rows = await self.runtime.pool.fetch("SELECT id, status FROM sessions")
        return {str(r["id"]): r["status"] for r in rows}

    def worker(self, *overrides: Any) -> Any:
        return worker_of(self.runtime, overrides=overrides)


@pytest.fixture
async def rstack(
    postgres: EmbeddedPostgres, settings: Settings, runtime: Runtime
) -> AsyncIterator[RetentionStack]:
    db = f"retention_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    own = settings.model_copy(
        update={
            "database_url": postgres.dsn.replace("/postgres?", f"/{db}?"),
            "temporal_task_queue": f"retention-{uuid.uuid4().hex[:8]}",
            "retention_schedule_id": f"retention-{uuid.uuid4().hex[:8]}",
            "op_maximum_attempts": 2,
        }
    )
    rt = await Runtime.open(own, vectors=runtime.vectors)
    app = create_app(own, rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=120
    ) as c:
        yield RetentionStack(rt, c)
    await rt.close(close_vectors=False)


async def rule_fixture(rs: RetentionStack) -> dict[str, str]:
    quota = rs.make.user()
    ids = {
        "inactive": await rs.session(updated_days=40),
        "shared_inactive": await rs.session(status="shared", updated_days=40),
        "recent": await rs.session(updated_days=1),
        "too_old": await rs.session(created_days=400, updated_days=1),
        "quota_1": await rs.session(owner=quota, updated_days=0.01),
        "quota_2": await rs.session(owner=quota, updated_days=0.02),
        "quota_3": await rs.session(owner=quota, updated_days=0.03),
        "quota_4": await rs.session(owner=quota, updated_days=0.04),
        "archived_old": await rs.session(status="archived", updated_days=100),
        "deleted_old": await rs.session(status="deleted", updated_days=100),
        "archived_recent": await rs.session(status="archived", updated_days=10),
        "held_old": await rs.session(status="archived", updated_days=100, locked_by="merge-x"),
        "inactive_100": await rs.session(updated_days=100),
    }
    return ids


async def test_every_rule_applies_once(rstack: RetentionStack) -> None:
    ids = await rule_fixture(rstack)
    collections = {
        k: (await rstack.client.get(f"/sessions/{v}")).json()["qdrant_collection_name"]
        for k, v in ids.items()
    }
    async with rstack.worker():
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.status_code == 200, r.text
    assert r.headers["Operation-Id"].startswith("cleanup-")
    body = r.json()
    assert body["message"] and body["policy_applied"]["max_sessions_per_user"] == 2
    stats = body["cleanup_stats"]
    assert stats["processed_count"] == 13
    assert stats["archived_count"] == 6
    assert stats["deleted_count"] == 2
    assert stats["skipped_locked_count"] == 1
    assert "archived_ids" not in stats
    after = await rstack.statuses()
    for name in ("inactive", "shared_inactive", "too_old", "quota_3", "quota_4", "inactive_100"):
        assert after[ids[name]] == "archived", name
    for name in ("recent", "quota_1", "quota_2"):
        assert after[ids[name]] == "active", name
    assert after[ids["archived_recent"]] == "archived"
    assert after[ids["held_old"]] == "archived"
    for name in ("archived_old", "deleted_old"):
        assert ids[name] not in after
        assert collections[name] not in await rstack.runtime.vectors.collection_names()
    # a second run finds nothing new to archive, and deletes nothing archived by the first
    async with rstack.worker():
        again = (await rstack.client.post("/sessions/cleanup", json=POLICY)).json()
    assert again["cleanup_stats"]["archived_count"] == 0
    assert again["cleanup_stats"]["deleted_count"] == 0


async def test_dry_run_lists_and_changes_nothing(rstack: RetentionStack) -> None:
    ids = await rule_fixture(rstack)
    before = await rstack.statuses()
    async with rstack.worker():
        r = await rstack.client.post("/sessions/cleanup", params={"dry_run": "true"}, json=POLICY)
    assert r.status_code == 200, r.text
    stats = r.json()["cleanup_stats"]
    assert stats["archived_count"] == 6 and stats["deleted_count"] == 2
    assert set(stats["archived_ids"]) == {
        ids[n]
        for n in ("inactive", "shared_inactive", "too_old", "quota_3", "quota_4", "inactive_100")
    }
    assert set(stats["deleted_ids"]) == {ids["archived_old"], ids["deleted_old"]}
    assert stats["archived_ids_truncated"] is False and stats["deleted_ids_truncated"] is False
    assert await rstack.statuses() == before


async def test_many_pages_continue_as_new_and_count_exactly(rstack: RetentionStack) -> None:
    old = [await rstack.session(updated_days=40) for _ in range(17)]
    fresh = [await rstack.session() for _ in range(6)]
    gone = [await rstack.session(status="archived", updated_days=120) for _ in range(4)]
    rt = rstack.runtime
    async with rstack.worker():
        handle = await rt.temporal.start_workflow(
            registry.CLEANUP.name,
            RetentionInput(rules=RetentionRules(**POLICY), page_size=4, pages_per_run=2),
            id=f"cleanup-{uuid.uuid4().hex}",
            task_queue=rt.settings.temporal_task_queue,
        )
        result = await handle.result()
    stats = result["cleanup_stats"]
    assert stats["processed_count"] == 27
    assert stats["archived_count"] == 17 and stats["deleted_count"] == 4
    runs = 0
    async for _ in rt.temporal.list_workflows(f"WorkflowId = '{handle.id}'"):
        runs += 1
    assert runs >= 4  # 7 archive pages and 8 delete pages at 2 pages a run
    after = await rstack.statuses()
    assert all(after[i] == "archived" for i in old)
    assert all(after[i] == "active" for i in fresh)
    assert not any(i in after for i in gone)


async def run_direct(rs: RetentionStack, inp: RetentionInput) -> tuple[str, dict[str, Any]]:
    """A sweep started with non-default RetentionInput fields (the API uses the defaults)."""
    rt = rs.runtime
    handle = await rt.temporal.start_workflow(
        registry.CLEANUP.name,
        inp,
        id=f"cleanup-{uuid.uuid4().hex}",
        task_queue=rt.settings.temporal_task_queue,
    )
    result: dict[str, Any] = await handle.result()
    return handle.id, result


async def test_a_failing_delete_does_not_lose_the_others(
    rstack: RetentionStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One collection that can't be dropped fails its own session only, in the same batch
    as the others: reported, its row kept and released, the others deleted."""
    doomed = [await rstack.session(status="archived", updated_days=120) for _ in range(5)]
    victim = doomed[2]
    vectors = rstack.runtime.vectors
    bad = (await rstack.client.get(f"/sessions/{victim}")).json()["qdrant_collection_name"]
    real_drop = vectors.drop_collection

    async def drop_collection(name: str) -> None:
        if name == bad:
            raise RuntimeError("injected drop failure")
        await real_drop(name)

    monkeypatch.setattr(vectors, "drop_collection", drop_collection)
    async with rstack.worker():
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.status_code == 200, r.text
    stats = r.json()["cleanup_stats"]
    assert stats["deleted_count"] == 4 and stats["failed_count"] == 1
    assert stats["failures"] == [{"session_id": victim, "error": "injected drop failure"}]
    assert set(await rstack.statuses()) == {victim}
    left = await rstack.runtime.pool.fetchval(
        "SELECT locked_by FROM sessions WHERE id = $1", uuid.UUID(victim)
    )
    assert left is None  # released: the next sweep tries again
    names = await vectors.collection_names()
    assert bad in names
    assert not any(f"session_{uuid.UUID(s).hex}" in names for s in doomed if s != victim)


def refusing_hold(victim: str, rt: Runtime) -> Any:
    real = SessionSteps(rt.pg, rt.vectors)

    @steps.HOLD_FOR_DELETE.fake
    async def hold_for_delete(inp: HoldInput) -> HoldResult:
        if victim in inp.session_ids:
            raise ApplicationError("injected refusal", type="Conflict", non_retryable=True)
        return await real.hold_for_delete(inp)

    return hold_for_delete


async def test_a_failing_batch_fails_its_own_sessions_only(rstack: RetentionStack) -> None:
    """A child that fails as a whole reports each of its sessions; other batches go on."""
    doomed = sorted(
        [await rstack.session(status="archived", updated_days=120) for _ in range(5)],
        key=uuid.UUID,
    )
    victim = doomed[2]  # batches of two in id order: the victim shares one with doomed[3]
    async with rstack.worker(refusing_hold(victim, rstack.runtime)):
        _, result = await run_direct(
            rstack, RetentionInput(rules=RetentionRules(**POLICY), delete_batch_size=2)
        )
    stats = result["cleanup_stats"]
    assert stats["deleted_count"] == 3 and stats["failed_count"] == 2
    assert {f["session_id"] for f in stats["failures"]} == {victim, doomed[3]}
    assert all(f["error"] == "injected refusal" for f in stats["failures"])
    assert set(await rstack.statuses()) == {victim, doomed[3]}
    held = await rstack.runtime.pool.fetch("SELECT locked_by FROM sessions")
    assert [r["locked_by"] for r in held] == [None, None]  # the failed child let go


def racing_hold(victim: str, rt: Runtime, change: str = "locked_by = 'merge-race'") -> Any:
    """``victim`` changes (by default: another operation takes it) between the sweep's
    evaluation and its hold."""
    real = SessionSteps(rt.pg, rt.vectors)

    @steps.HOLD_FOR_DELETE.fake
    async def hold_for_delete(inp: HoldInput) -> HoldResult:
        await rt.pool.execute(f"UPDATE sessions SET {change} WHERE id = $1", uuid.UUID(victim))
        return await real.hold_for_delete(inp)

    return hold_for_delete


async def test_a_session_held_by_another_operation_is_skipped_in_a_batch(
    rstack: RetentionStack,
) -> None:
    doomed = [await rstack.session(status="archived", updated_days=120) for _ in range(5)]
    victim = doomed[1]
    victim_collection = f"session_{uuid.UUID(victim).hex}"
    async with rstack.worker(racing_hold(victim, rstack.runtime)):
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.status_code == 200, r.text
    stats = r.json()["cleanup_stats"]
    assert stats["deleted_count"] == 4 and stats["skipped_locked_count"] == 1
    assert stats["failed_count"] == 0 and "failures" not in stats
    assert set(await rstack.statuses()) == {victim}
    holder = await rstack.runtime.pool.fetchval(
        "SELECT locked_by FROM sessions WHERE id = $1", uuid.UUID(victim)
    )
    assert holder == "merge-race"  # untouched: still its holder's
    assert victim_collection in await rstack.runtime.vectors.collection_names()


async def test_a_session_restored_after_evaluation_is_not_deleted(
    rstack: RetentionStack,
) -> None:
    doomed = [await rstack.session(status="archived", updated_days=120) for _ in range(3)]
    victim = doomed[2]
    async with rstack.worker(racing_hold(victim, rstack.runtime, "status = 'active'")):
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.status_code == 200, r.text
    stats = r.json()["cleanup_stats"]
    assert stats["deleted_count"] == 2 and stats["skipped_locked_count"] == 1
    assert stats["failed_count"] == 0
    row = await rstack.runtime.pool.fetchrow(
        "SELECT status, locked_by FROM sessions WHERE id = $1", uuid.UUID(victim)
    )
    assert (row["status"], row["locked_by"]) == ("active", None)
    assert f"session_{uuid.UUID(victim).hex}" in await rstack.runtime.vectors.collection_names()


async def test_a_batch_whose_child_is_already_running_is_skipped_not_failed(
    rstack: RetentionStack,
) -> None:
    """A batch child with the same id still running (a reset sweep) holds those sessions:
    they count as skipped, untouched, and nothing is reported as failed."""
    doomed = sorted(
        [await rstack.session(status="archived", updated_days=120) for _ in range(3)],
        key=uuid.UUID,
    )
    key = f"k-{uuid.uuid4().hex}"
    op = "cleanup-" + hashlib.sha256(f"None\0{key}".encode()).hexdigest()[:32]
    squatter = await rstack.runtime.temporal.start_workflow(
        registry.DELETE.name,
        id=f"{op}-delete-{uuid.UUID(doomed[0]).hex}",
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",  # never runs: stays "running"
    )
    try:
        async with rstack.worker():
            r = await rstack.client.post(
                "/sessions/cleanup", json=POLICY, headers={"Idempotency-Key": key}
            )
    finally:
        await squatter.terminate()
    assert r.status_code == 200, r.text
    assert r.headers["Operation-Id"] == op
    stats = r.json()["cleanup_stats"]
    assert stats["deleted_count"] == 0 and stats["skipped_locked_count"] == 3
    assert stats["failed_count"] == 0 and "failures" not in stats
    assert set(await rstack.statuses()) == set(doomed)


async def test_batch_delete_steps_are_retry_safe(
    rstack: RetentionStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step of a batch delete repeated (as a retry would) changes nothing more, and a
    retried drop resumes after the sessions its last heartbeat covered."""
    rt = rstack.runtime
    ids = [await rstack.session(status="archived", updated_days=120) for _ in range(3)]
    steps, points = SessionSteps(rt.pg, rt.vectors), PointSteps(rt.vectors)
    env = ActivityEnvironment()
    hold = HoldInput(operation_id="delete-test", session_ids=ids)
    first = await env.run(steps.hold_for_delete, hold)
    assert await env.run(steps.hold_for_delete, hold) == first
    assert [h.id for h in first.sessions] == ids
    dropped: list[str] = []
    real_drop = rt.vectors.drop_collection

    async def drop_collection(name: str) -> None:
        dropped.append(name)
        await real_drop(name)

    monkeypatch.setattr(rt.vectors, "drop_collection", drop_collection)
    env.info = dataclasses.replace(
        env.info, heartbeat_details=[{"dropped": [ids[0]], "failures": []}]
    )
    done = await env.run(points.drop_collections, DropCollectionsInput(sessions=first.sessions))
    assert done.dropped == ids and dropped == [h.collection for h in first.sessions[1:]]
    rows = DeleteRowsInput(operation_id="delete-test", delete_ids=ids[:2], release_ids=ids[2:])
    await env.run(steps.delete_session_rows, rows)
    await env.run(steps.delete_session_rows, rows)
    left = await rt.pool.fetch("SELECT id, locked_by FROM sessions")
    assert [(str(r["id"]), r["locked_by"]) for r in left] == [(ids[2], None)]


async def test_dry_run_lists_are_capped_and_counts_stay_exact(rstack: RetentionStack) -> None:
    await rule_fixture(rstack)
    async with rstack.worker():
        _, result = await run_direct(
            rstack,
            RetentionInput(
                rules=RetentionRules(**POLICY),
                dry_run=True,
                ids_listed=1,
                page_size=3,
                pages_per_run=2,
            ),
        )
    stats = result["cleanup_stats"]
    assert stats["archived_count"] == 6 and stats["deleted_count"] == 2
    assert len(stats["archived_ids"]) == 1 and stats["archived_ids_truncated"] is True
    assert len(stats["deleted_ids"]) == 1 and stats["deleted_ids_truncated"] is True


async def test_a_continued_sweep_was_created_when_its_first_run_started(
    rstack: RetentionStack,
) -> None:
    for _ in range(6):
        await rstack.session(updated_days=40)
    rt = rstack.runtime
    async with rstack.worker():
        op_id, _ = await run_direct(
            rstack, RetentionInput(rules=RetentionRules(**POLICY), page_size=2, pages_per_run=1)
        )
    runs = [w async for w in rt.temporal.list_workflows(f"WorkflowId = '{op_id}'")]
    assert len(runs) >= 3
    first = min(runs, key=lambda w: w.start_time)
    op = (await rstack.client.get(f"/operations/{op_id}")).json()
    assert op["status"] == "succeeded"
    assert datetime.fromisoformat(op["created_at"]) == first.start_time
    assert datetime.fromisoformat(op["finished_at"]) > max(w.start_time for w in runs)


async def test_sweep_histories_replay_old_and_new(rstack: RetentionStack) -> None:
    """A sweep with batched deletes replays; so does one recorded when every delete was a
    child of its own (the ``batched-deletes`` patch keeps that path for running sweeps)."""
    for _ in range(3):
        await rstack.session(status="archived", updated_days=120)
    async with rstack.worker():
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.json()["cleanup_stats"]["deleted_count"] == 3
    handle = rstack.runtime.temporal.get_workflow_handle(r.headers["Operation-Id"])
    replayer = Replayer(
        workflows=discovery.workflow_classes(),
        data_converter=pydantic_data_converter,
        interceptors=[OperationRecord()],
    )
    await replayer.replay_workflow(await handle.fetch_history())
    old = WorkflowHistory.from_json(
        "cleanup-per-session", (HISTORIES / "cleanup_per_session_deletes.json").read_text()
    )
    await replayer.replay_workflow(old)


async def test_schedule_created_once_updated_paused_and_triggered(rstack: RetentionStack) -> None:
    rt = rstack.runtime
    assert await prepare(rt.temporal, rt.settings, rt.pg.retention) == [
        f"schedule {rt.settings.retention_schedule_id}"
    ]
    assert await prepare(rt.temporal, rt.settings, rt.pg.retention) == []
    handle = rt.temporal.get_schedule_handle(rt.settings.retention_schedule_id)
    view = (await rstack.client.get("/sessions/retention-policy")).json()
    assert view["schedule"]["exists"] and view["schedule"]["paused"] is False
    assert all("T03:00:00" in t for t in view["schedule"]["next_runs"])

    policy = {**POLICY, "schedule": "30 4 * * *", "enabled": False}
    assert (await rstack.client.put("/sessions/retention-policy", json=policy)).status_code == 200
    desc = await handle.describe()
    assert desc.schedule.state.paused is True
    policy["enabled"] = True
    await rstack.client.put("/sessions/retention-policy", json=policy)
    view = (await rstack.client.get("/sessions/retention-policy")).json()
    assert view["schedule"]["paused"] is False and view["retention_policy"] == policy
    assert view["schedule"]["next_runs"] and all(
        "T04:30:00" in t for t in view["schedule"]["next_runs"]
    )

    stale = await rstack.session(updated_days=45)
    async with rstack.worker():
        await handle.trigger()
        for _ in range(300):
            if (await rstack.statuses())[stale] == "archived":
                break
            import asyncio

            await asyncio.sleep(0.1)
    assert (await rstack.statuses())[stale] == "archived"


async def test_days_pass_inside_time_skipping_server(rstack: RetentionStack) -> None:
    """Sessions touched today become 31 days inactive when 31 days pass in Temporal."""
    fresh = [await rstack.session() for _ in range(3)]
    rt = rstack.runtime
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(scripts_dir() / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        client: Client = env.client
        worker = build_worker(client, "skip", rt.pg, rt.vectors, rt.artifacts)
        async with worker:
            await env.sleep(timedelta(days=31))
            result = await client.execute_workflow(
                registry.CLEANUP.name,
                RetentionInput(rules=RetentionRules(**POLICY)),
                id=f"cleanup-{uuid.uuid4().hex}",
                task_queue="skip",
            )
    finally:
        await env.shutdown()
    assert result["cleanup_stats"]["archived_count"] == 3
    after = await rstack.statuses()
    assert all(after[i] == "archived" for i in fresh)
