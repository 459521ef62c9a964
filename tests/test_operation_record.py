"""Operations as a durable record (issue 15): a row per operation written at its start
and end by the workflow's own activities, listed from SQL with keyset paging, answered
from the row once Temporal's retention purged the run, idempotency keys swept."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.exceptions import ApplicationError

from session_service.services.runtime import Runtime
from session_service.stores.operation_rows import OperationStore
from session_service.temporal import registry, steps
from session_service.temporal.contracts import LockInput, LockResult, OperationKind
from tests.conftest import Factory, OpsStack
from tests.test_access import stalled_lock
from tests.test_operations import seeded


def store(runtime: Runtime) -> OperationStore:
    return OperationStore(runtime.pg.pool)


def failing_lock() -> Any:
    @steps.LOCK_SESSIONS.fake
    async def lock_sessions(inp: LockInput) -> LockResult:
        raise ApplicationError("the sources are gone", type="Conflict", non_retryable=True)

    return lock_sessions


async def merge(c: httpx.AsyncClient, make: Factory, **headers: str) -> httpx.Response:
    a = await seeded(make, [1, 2], tag="a")
    b = await seeded(make, [3], tag="b")
    return await c.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]]},
        headers={"Prefer": "respond-async", **headers},
    )


async def test_rows_written_at_start_and_end_for_success_failure_and_cancel(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    c, make, rows = ops_stack.client, ops_stack.make, store(runtime)
    # no worker yet: the API's row exists all the same
    r = await merge(c, make)
    ok = r.json()["id"]
    row = await rows.get(ok)
    assert row is not None and row.status == "running" and row.started_at is None
    assert row.kind == "merge" and len(row.session_ids) == 3 and row.summary
    async with ops_stack.worker():
        op = await ops_stack.wait(ok, "succeeded", "failed")
    row = await rows.get(ok)
    assert row is not None and row.status == "succeeded" and row.started_at and row.finished_at
    assert row.result == op["result"] and row.result["id"] == row.session_ids[-1]
    assert row.progress is not None and row.progress["phase"] == "done"

    async with ops_stack.worker(failing_lock()):
        failed = (await merge(c, make)).json()["id"]
        op = await ops_stack.wait(failed, "failed", "succeeded")
    row = await rows.get(failed)
    assert row is not None and row.status == "failed"
    assert (row.error_type, row.error_message) == ("Conflict", "the sources are gone")
    assert op["error"] == {"type": "Conflict", "message": "the sources are gone"}

    async with ops_stack.worker(stalled_lock()):
        cancelled = (await merge(c, make)).json()["id"]
        assert (await c.post(f"/operations/{cancelled}/cancel")).status_code == 202
        await ops_stack.wait(cancelled, "cancelled", "failed")
    row = await rows.get(cancelled)
    assert row is not None and row.status == "cancelled" and row.error_type == "Cancelled"


def next_token(r: httpx.Response) -> str | None:
    link = r.headers.get("link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return parse_qs(urlsplit(link[1 : link.index(">")]).query)["page_token"][0]


async def fake_rows(runtime: Runtime, n: int, kind: str, session_id: str) -> list[str]:
    ids = []
    for _ in range(n):
        oid = f"{kind}-{uuid.uuid4().hex}"
        await store(runtime).begin(
            operation_id=oid,
            kind=kind,
            session_ids=[session_id],
            owner_id=None,
            started_by=None,
            cancel_permission=None,
            cancel_ids=[session_id],
            summary="fake",
        )
        await runtime.pg.pool.execute(
            "UPDATE operations SET status = 'succeeded', finished_at = now() WHERE id = $1", oid
        )
        ids.append(oid)
    return ids


async def test_paging_has_no_holes_or_repeats_under_concurrent_inserts(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    sid = (await make.session())["id"]
    before = await fake_rows(runtime, 25, "export", sid)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"session_id": sid, "limit": 7}
        if token:
            params["page_token"] = token
        r = await client.get("/operations", params=params)
        assert r.status_code == 200, r.text
        seen += [o["id"] for o in r.json()]
        pages += 1
        if pages == 2:  # newer operations arrive while a reader pages
            await fake_rows(runtime, 5, "export", sid)
        token = next_token(r)
        if token is None:
            break
    assert len(seen) == len(set(seen))  # no repeats
    assert set(before) <= set(seen)  # no holes: every row there at the start is listed
    bad = await client.get("/operations", params={"page_token": "not-a-token"})
    assert bad.status_code == 422


async def test_filters_apply_in_sql_so_a_page_is_full(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    sid = (await make.session())["id"]
    other = (await make.session())["id"]
    wanted = await fake_rows(runtime, 5, "export", sid)
    await fake_rows(runtime, 30, "import", sid)  # newer, of another kind
    await fake_rows(runtime, 30, "export", other)  # newer, of another session
    r = await client.get("/operations", params={"session_id": sid, "kind": "export", "limit": 5})
    assert [o["id"] for o in r.json()] == wanted[::-1]
    r = await client.get(
        "/operations", params={"session_id": sid, "status": "running", "kind": "export"}
    )
    assert r.json() == []
    # visibility is a filter too: a user who reads neither session sees nothing, but
    # an owner's page is full of their own operations
    owner = make.user()
    mine = (await make.session(owner_id=owner))["id"]
    own = await fake_rows(runtime, 3, "export", mine)
    r = await client.get("/operations", params={"limit": 3}, headers={"X-User-Id": owner})
    assert [o["id"] for o in r.json()] == own[::-1]
    r = await client.get("/operations", params={"session_id": mine}, headers={"X-User-Id": "x"})
    assert r.json() == []


async def test_an_operation_outlives_its_temporal_record(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    from temporalio.api.common.v1 import WorkflowExecution

    c, make = ops_stack.client, ops_stack.make
    async with ops_stack.worker():
        r = await merge(c, make, **{"Idempotency-Key": f"k-{uuid.uuid4().hex}"})
        key = r.request.headers["Idempotency-Key"]
        body = r.request.content
        op_id = r.json()["id"]
        done = await ops_stack.wait(op_id, "succeeded", "failed")
    await runtime.temporal.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=runtime.settings.temporal_namespace,
            workflow_execution=WorkflowExecution(workflow_id=op_id),
        )
    )
    while await runtime.operations._known_to_temporal(op_id):  # noqa: SLF001
        await asyncio.sleep(0.2)
    got = await c.get(f"/operations/{op_id}")
    assert got.status_code == 200
    assert {k: got.json()[k] for k in ("status", "result", "session_ids", "kind")} == {
        k: done[k] for k in ("status", "result", "session_ids", "kind")
    }
    listed = await c.get("/operations", params={"session_id": done["session_ids"][0]})
    assert op_id in [o["id"] for o in listed.json()]
    # the same key again: the same operation and its result, nothing started anew
    again = await c.post(
        "/sessions/merge",
        content=body,
        headers={"Idempotency-Key": key, "content-type": "application/json"},
    )
    assert again.status_code == 200 and again.headers["Operation-Id"] == op_id
    assert again.json() == done["result"]
    assert not await runtime.operations._known_to_temporal(op_id)  # noqa: SLF001
    sessions = await c.get("/sessions", params={"limit": 1000})
    merged = [s for s in sessions.json() if s["name"] == done["result"]["name"]]
    assert len(merged) == 1


async def test_idempotency_keys_older_than_the_ttl_are_swept(runtime: Runtime) -> None:
    from datetime import timedelta

    from session_service.temporal.activities.record_steps import RecordSteps

    pool = runtime.pg.pool
    old, fresh = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    for key, age in ((old, timedelta(hours=25)), (fresh, timedelta(hours=1))):
        await pool.execute(
            """INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at)
               VALUES ('t', $1, 'h', 'r', now() - $2::interval)""",
            key,
            age,
        )
    steps = RecordSteps(store(runtime), timedelta(hours=24))
    assert await steps.sweep_idempotency_keys() >= 1
    left = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
    assert fresh in left and old not in left


async def test_the_scheduled_sweep_runs_the_key_sweep(
    ops_stack: OpsStack, runtime: Runtime
) -> None:
    """A scheduled retention run (rules read from the policy) sweeps the keys first."""
    from session_service.temporal.contracts import RetentionInput

    pool = runtime.pg.pool
    old = f"old-{uuid.uuid4().hex}"
    await pool.execute(
        """INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at)
           VALUES ('t', $1, 'h', 'r', now() - interval '30 hours')""",
        old,
    )
    async with ops_stack.worker():
        handle = await runtime.temporal.start_workflow(
            registry.CLEANUP.name,
            RetentionInput(dry_run=True),
            id=f"cleanup-{uuid.uuid4().hex}",
            task_queue=ops_stack.runtime.settings.temporal_task_queue,
        )
        await handle.result()
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", old) == 0
    row = await store(runtime).get(handle.id)
    assert row is not None and row.kind == OperationKind.CLEANUP.value and row.status == "succeeded"
