"""Section E: the access matrix (owner, admin, write, read, stranger) and API keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio import activity

from session_service.api.app import create_app
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal import steps
from session_service.temporal.contracts import LockInput, LockResult
from tests.conftest import Factory, OpsStack

# (action, method, path, body, least permission needed)
ACTIONS: list[tuple[str, str, str, Any, str]] = [
    ("get", "GET", "", None, "read"),
    ("stats", "GET", "/stats", None, "read"),
    ("collaborators", "GET", "/collaborators", None, "read"),
    ("points", "GET", "/points", None, "read"),
    ("collection", "GET", "/collection", None, "read"),
    ("update", "PUT", "", {"description": "changed"}, "write"),
    ("post stats", "PUT", "/stats", {"urls_processed": 1}, "write"),
    ("model usage", "PUT", "/model-usage?model_type=llm&model_name=m", None, "write"),
    ("put points", "PUT", "/points", {"points": [{"id": 7, "vector": [1.0] * 4}]}, "write"),
    ("delete points", "POST", "/points/delete", {"ids": [7]}, "write"),
    ("share", "POST", "/share", {"user_ids": ["someone"]}, "admin"),
    ("archive", "POST", "/archive", None, "admin"),
    ("restore", "POST", "/restore", None, "admin"),
    ("soft delete", "DELETE", "", None, "admin"),
    ("archive by update", "PUT", "", {"status": "archived"}, "admin"),
    ("delete by update", "PUT", "", {"status": "deleted"}, "admin"),
    ("same status by update", "PUT", "", {"status": "shared", "name": "n"}, "write"),
]
RANK = {"stranger": 0, "read": 1, "write": 2, "admin": 3, "owner": 4}


@pytest.mark.parametrize("role", ["owner", "admin", "write", "read", "stranger"])
@pytest.mark.parametrize(
    ("action", "method", "path", "body", "needed"), ACTIONS, ids=[a[0] for a in ACTIONS]
)
async def test_access_matrix(
    client: httpx.AsyncClient,
    make: Factory,
    role: str,
    action: str,
    method: str,
    path: str,
    body: Any,
    needed: str,
) -> None:
    owner = make.user()
    s = await make.session(owner_id=owner, configuration={"vector_size": 4})
    for perm in ("read", "write", "admin"):
        r = await client.post(
            f"/sessions/{s['id']}/share",
            json={"user_ids": [f"{owner}-{perm}"], "permissions": [perm]},
        )
        assert r.status_code == 200
    user = owner if role == "owner" else f"{owner}-{role}"
    r = await client.request(
        method, f"/sessions/{s['id']}{path}", json=body, headers={"X-User-Id": user}
    )
    if RANK[role] >= RANK[needed]:
        assert r.status_code == 200, r.text
    elif role == "stranger":
        assert r.status_code == 404, r.text  # existence not disclosed
    else:
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/json"


async def test_list_shows_only_readable_sessions(client: httpx.AsyncClient, make: Factory) -> None:
    alice, bob = make.user(), make.user()
    mine = await make.session(headers={"X-User-Id": alice})
    assert mine["owner_id"] == alice
    shared = await make.session(owner_id=bob)
    await client.post(f"/sessions/{shared['id']}/share", json={"user_ids": [alice]})
    hidden = await make.session(owner_id=bob)
    listed = {s["id"] for s in (await client.get("/sessions", headers={"X-User-Id": alice})).json()}
    assert mine["id"] in listed and shared["id"] in listed and hidden["id"] not in listed


async def test_user_cannot_create_for_someone_else(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/sessions", json={"name": "x", "owner_id": "bob"}, headers={"X-User-Id": "alice"}
    )
    assert r.status_code == 403


async def test_compare_needs_read_on_every_session(
    client: httpx.AsyncClient, make: Factory
) -> None:
    alice = make.user()
    a = await make.session(owner_id=alice)
    b = await make.session(owner_id=make.user())
    r = await client.post(
        "/sessions/compare", json={"session_ids": [a["id"], b["id"]]}, headers={"X-User-Id": alice}
    )
    assert r.status_code == 404


async def test_retention_policy_change_needs_trusted_caller(client: httpx.AsyncClient) -> None:
    r = await client.put("/sessions/retention-policy", json={}, headers={"X-User-Id": "alice"})
    assert r.status_code == 403


@pytest.fixture
async def keyed_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    keyed = settings.model_copy(update={"session_api_keys": "key-number-one,key-number-two"})
    app = create_app(keyed, runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


async def test_api_keys(keyed_client: httpx.AsyncClient) -> None:
    assert (await keyed_client.get("/health")).status_code == 200
    missing = await keyed_client.get("/sessions")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/json"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await keyed_client.get("/sessions", headers={"Authorization": "Bearer nope-nope-nope"})
    assert wrong.status_code == 401
    for key in ("key-number-one", "key-number-two"):
        ok = await keyed_client.get("/sessions", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200


def test_placeholder_api_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(session_api_keys="changeme")


async def test_restoring_by_update_needs_admin(client: httpx.AsyncClient, make: Factory) -> None:
    owner = make.user()
    s = await make.session(owner_id=owner)
    await client.post(
        f"/sessions/{s['id']}/share", json={"user_ids": [f"{owner}-w"], "permissions": ["write"]}
    )
    await client.post(f"/sessions/{s['id']}/archive")
    r = await client.put(
        f"/sessions/{s['id']}", json={"status": "active"}, headers={"X-User-Id": f"{owner}-w"}
    )
    assert r.status_code == 403, r.text
    assert (await client.get(f"/sessions/{s['id']}")).json()["status"] == "archived"


# operations (API.md E): split and permanent delete need admin, a merge write on each
# source (admin on each when it archives them), and cancelling what starting needed

ROLES = ["owner", "admin", "write", "read", "stranger"]
OPERATIONS = {
    "split": "admin",
    "permanent delete": "admin",
    "merge": "write",
    "merge archiving": "admin",
}


async def shared_sessions(
    client: httpx.AsyncClient, make: Factory, n: int
) -> tuple[str, list[str]]:
    """``n`` sessions with a point each, owned by one user and shared with ``<owner>-<perm>``."""
    owner = make.user()
    ids = []
    for i in range(n):
        s = await make.session(owner_id=owner, configuration={"vector_size": 4})
        await make.points(s["id"], [i + 1])
        for perm in ("read", "write", "admin"):
            r = await client.post(
                f"/sessions/{s['id']}/share",
                json={"user_ids": [f"{owner}-{perm}"], "permissions": [perm]},
            )
            assert r.status_code == 200
        ids.append(s["id"])
    return owner, ids


def start_request(operation: str, ids: list[str]) -> tuple[str, str, Any]:
    if operation == "split":
        return "POST", f"/sessions/{ids[0]}/split", {"parts": [{"name": "p", "point_ids": [1]}]}
    if operation == "permanent delete":
        return "DELETE", f"/sessions/{ids[0]}?permanent=true", None
    archive = operation == "merge archiving"
    return "POST", "/sessions/merge", {"source_session_ids": ids, "archive_sources": archive}


def expected(role: str, needed: str) -> int:
    if RANK[role] >= RANK[needed]:
        return 200
    return 404 if role == "stranger" else 403


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_operation_access_matrix(
    client: httpx.AsyncClient, make: Factory, operation: str, role: str
) -> None:
    owner, ids = await shared_sessions(client, make, 2)
    user = owner if role == "owner" else f"{owner}-{role}"
    before = [(await client.get(f"/sessions/{i}")).json() for i in ids]
    method, path, body = start_request(operation, ids)
    r = await client.request(method, path, json=body, headers={"X-User-Id": user})
    assert r.status_code == expected(role, OPERATIONS[operation]), r.text
    if r.status_code != 200:
        assert [(await client.get(f"/sessions/{i}")).json() for i in ids] == before


async def test_merge_archiving_needs_admin_on_every_source(
    client: httpx.AsyncClient, make: Factory
) -> None:
    owner, ids = await shared_sessions(client, make, 2)
    await client.post(
        f"/sessions/{ids[1]}/share", json={"user_ids": [f"{owner}-write"], "permissions": ["admin"]}
    )
    r = await client.post(
        "/sessions/merge",
        json={"source_session_ids": ids, "archive_sources": True},
        headers={"X-User-Id": f"{owner}-write"},
    )
    assert r.status_code == 403 and ids[0] in r.json()["detail"]


def stalled_lock() -> Any:
    """lock_sessions that never finishes (until cancelled): every operation stays running."""

    @steps.LOCK_SESSIONS.fake
    async def lock_sessions(inp: LockInput) -> LockResult:
        while True:
            activity.heartbeat(None)
            await asyncio.sleep(0.05)

    return lock_sessions


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_cancel_needs_what_starting_needed(
    ops_stack: OpsStack, operation: str, role: str
) -> None:
    c = ops_stack.client
    owner, ids = await shared_sessions(c, ops_stack.make, 2)
    user = owner if role == "owner" else f"{owner}-{role}"
    method, path, body = start_request(operation, ids)
    async with ops_stack.worker(stalled_lock()):
        r = await c.request(method, path, json=body, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        cancel = await c.post(f"/operations/{op_id}/cancel", headers={"X-User-Id": user})
        want = expected(role, OPERATIONS[operation])
        assert cancel.status_code == (202 if want == 200 else want), cancel.text
        if want != 200:
            assert (await c.get(f"/operations/{op_id}")).json()["status"] == "running"
            assert (await c.post(f"/operations/{op_id}/cancel")).status_code == 202
        assert (await ops_stack.wait(op_id, "cancelled", "failed"))["status"] == "cancelled"
