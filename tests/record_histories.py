"""Records one history per workflow kind into tests/histories/ (not collected by CI).

Run on the release whose histories should keep replaying:
``RECORD_HISTORIES=<release> .venv/bin/python -m pytest tests/record_histories.py`` writes
``<kind>@<release>.json`` beside the earlier releases' files
(``RECORD_HISTORIES=1``: ``<kind>.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from session_service.services.runtime import Runtime
from tests.conftest import Factory, OpsStack
from tests.test_operations import failing_copy, failing_copy_ids, seeded
from tests.test_retention import POLICY, RetentionStack, rstack  # noqa: F401

HISTORIES = Path(__file__).resolve().parent / "histories"
RELEASE = os.environ.get("RECORD_HISTORIES", "1")

pytestmark = [
    pytest.mark.usefixtures("worker"),
    pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="records on request"),
]


async def save(runtime: Runtime, kind: str, response: httpx.Response) -> None:
    """Writes the history, and its workflow id (child ids derive from it) to workflow_ids.json."""
    op_id = response.headers["Operation-Id"]
    kind = kind if RELEASE == "1" else f"{kind}@{RELEASE}"
    handle = runtime.temporal.get_workflow_handle(op_id)
    (HISTORIES / f"{kind}.json").write_text((await handle.fetch_history()).to_json())
    ids_file = HISTORIES / "workflow_ids.json"
    ids = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    ids[kind] = op_id
    ids_file.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")


async def test_record_every_kind(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    owner = make.user()
    a = await seeded(make, [1, 2, 3], tag="a", owner=owner, tags=["x"], metadata={"k": 1})
    b = await seeded(make, [3, 4], tag="b", owner=owner, tags=["y"])
    merged = await client.post(
        "/sessions/merge",
        json={"source_session_ids": [a["id"], b["id"]], "archive_sources": True},
    )
    assert merged.status_code == 200, merged.text
    split = await client.post(
        f"/sessions/{merged.json()['id']}/split",
        json={
            "parts": [
                {"name": "p1", "point_ids": [1, 2]},
                {"name": "p2", "point_ids": [99]},
                {"name": "p3", "point_ids": [4], "tags": ["z"]},
            ]
        },
    )
    assert split.status_code == 200, split.text
    exported = await client.post(f"/sessions/{b['id']}/exports")
    assert exported.status_code == 200, exported.text
    imported = await client.post(
        "/sessions/import", json={"export_id": exported.json()["export_id"]}
    )
    assert imported.status_code == 200, imported.text
    deleted = await client.delete(f"/sessions/{a['id']}", params={"permanent": "true"})
    assert deleted.status_code == 200, deleted.text
    for kind, r in (
        ("merge", merged),
        ("split", split),
        ("export", exported),
        ("import", imported),
        ("delete", deleted),
    ):
        await save(runtime, kind, r)


async def test_record_failed_merge(ops_stack: OpsStack, runtime: Runtime) -> None:
    make = ops_stack.make
    a = await seeded(make, list(range(30)), tag="a")
    b = await seeded(make, list(range(30, 60)), tag="b")
    async with ops_stack.worker(failing_copy(runtime.vectors, fail_on_call=2)):
        r = await ops_stack.client.post(
            "/sessions/merge", json={"source_session_ids": [a["id"], b["id"]]}
        )
    assert r.status_code == 500, r.text
    await save(runtime, "merge_compensated", r)


async def test_record_failed_split(ops_stack: OpsStack, runtime: Runtime) -> None:
    src = await seeded(ops_stack.make, list(range(20)), tag="s")
    async with ops_stack.worker(failing_copy_ids(2, runtime.vectors)):
        r = await ops_stack.client.post(
            f"/sessions/{src['id']}/split",
            json={
                "parts": [
                    {"name": "p1", "point_ids": list(range(10))},
                    {"name": "p2", "point_ids": list(range(10, 20))},
                ]
            },
        )
    assert r.status_code == 500, r.text
    await save(runtime, "split_compensated", r)


async def test_record_cleanup(rstack: RetentionStack) -> None:  # noqa: F811
    for _ in range(2):
        await rstack.session(status="archived", updated_days=120)
    await rstack.session(updated_days=40)
    async with rstack.worker():
        r = await rstack.client.post("/sessions/cleanup", json=POLICY)
    assert r.status_code == 200, r.text
    assert r.json()["cleanup_stats"]["deleted_count"] == 2
    await save(rstack.runtime, "cleanup", r)


async def test_record_offload_and_reload(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await seeded(make, list(range(25)), tag="cold")
    offloaded = await client.post(f"/sessions/{s['id']}/offload")
    assert offloaded.status_code == 200, offloaded.text
    reloaded = await client.post(f"/sessions/{s['id']}/reload")
    assert reloaded.status_code == 200, reloaded.text
    await save(runtime, "offload", offloaded)
    await save(runtime, "reload", reloaded)
