"""The OpenAPI document tells the truth (issue 15).

Every error response it documents is provoked from the live app and the body
checked against the documented schema and media type; every status the hostile
request tables see is documented; the docs pages load nothing from outside.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jsonschema
import pytest

from session_service.api.app import create_app
from session_service.api.examples import EXAMPLES
from session_service.api.openapi import PROBLEM_MEDIA_TYPES
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from tests import test_bad_input, test_hostile_http
from tests.conftest import Factory

KEY = "openapi-test-key-123456"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
IDS_FILE = Path(__file__).with_name("openapi_operation_ids.txt")
OPEN = {"/health", "/health/live", "/health/ready", "/metrics"}


@pytest.fixture(scope="module")
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


@pytest.fixture(scope="module")
async def strict(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An app with SESSION_API_KEYS set, a 64-byte body limit and a task queue no worker
    polls (so /health/ready is 503), over the shared runtime."""
    own = settings.model_copy(
        update={
            "session_api_keys": KEY,
            "max_body_bytes": 64,
            "temporal_task_queue": f"openapi-{uuid.uuid4().hex[:8]}",
        }
    )
    rt = Runtime(
        settings=own, pool=runtime.pool, vectors=runtime.vectors, temporal=runtime.temporal
    )
    transport = httpx.ASGITransport(app=create_app(own, rt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


# docs pages


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_packaged_assets(strict: httpx.AsyncClient, page: str) -> None:
    """Offline, a CDN reference is a blank page: every URL is local and served (without an
    API key, which a browser can't send for a page and its scripts)."""
    r = await strict.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "://" not in r.text, "the page names an outside URL"
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    urls += re.findall(r"""url: *['"]([^'"]+)['"]""", r.text)
    urls += re.findall(r"""spec-url=["']([^"']+)["']""", r.text)
    assert any(u.endswith(".js") for u in urls), urls
    assert "/openapi.json" in urls, urls
    for url in urls:
        assert url.startswith("/"), url
        asset = await strict.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


async def test_no_fastapi_validation_error_and_a_problem_schema(spec: dict[str, Any]) -> None:
    text = str(spec)
    assert "HTTPValidationError" not in text
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert {"instance", "errors", "operation_id"} <= problem["properties"].keys()


async def test_bearer_scheme_on_every_route_but_the_probes(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for method, path, op in operations(spec):
        if path in OPEN:
            assert "security" not in op and "401" not in op["responses"], (method, path)
        else:
            assert op["security"] == [{"bearerAuth": []}], (method, path)


async def test_operation_ids_are_stable(spec: dict[str, Any]) -> None:
    """Function names, snake_case and unique; none of the checked-in ones renamed or moved
    (new routes may add ids: append them to the file)."""
    seen = {op["operationId"]: f"{method} {path}" for method, path, op in operations(spec)}
    assert len(seen) == len(operations(spec))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in seen), seen
    for line in IDS_FILE.read_text().splitlines():
        op_id, where = line.split(" ", 1)
        assert seen.get(op_id) == where, line


async def test_examples_match_their_schemas(spec: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(spec)}
    assert EXAMPLES.keys() <= by_id.keys()
    for op_id, example in EXAMPLES.items():
        op = by_id[op_id]
        if "request" in example:
            media = op["requestBody"]["content"]["application/json"]
            _validate(spec, media["schema"], media["example"])
        if "response" in example:
            media = op["responses"][example.get("status", "200")]["content"]["application/json"]
            assert media["example"] == example["response"]
            _validate(spec, media["schema"], media["example"])


def _validate(spec: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(body)


# every documented error is real


@dataclass
class World:
    client: httpx.AsyncClient
    strict: httpx.AsyncClient
    runtime: Runtime
    owner: str
    reader: str
    sid: str  # owned by owner, shared read with reader, points 1..3, vector_size 4
    wide: str  # vector_size 8
    locked: str  # held by a made-up operation
    writing_export: str  # an export row still being written
    done_op: str  # a finished operation
    pending_op: str  # a permanent delete no worker runs, of a session reader may read


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, strict: httpx.AsyncClient, runtime: Runtime, worker: None
) -> AsyncIterator[World]:
    make = Factory(client)
    owner, reader = make.user(), make.user()
    sid = (await make.session(owner_id=owner, configuration={"vector_size": 4}))["id"]
    await make.points(sid, [1, 2, 3])
    r = await client.post(f"/sessions/{sid}/share", json={"user_ids": [reader]})
    assert r.status_code == 200
    wide = (await make.session(owner_id=owner, configuration={"vector_size": 8}))["id"]
    locked = (await make.session(owner_id=owner, configuration={"vector_size": 4}))["id"]
    hold = f"merge-openapi-{uuid.uuid4().hex[:8]}"
    await runtime.pg.locks.lock(hold, [locked])
    export_id = str(uuid.uuid4())
    await runtime.pg.exports.create(export_id, sid, owner, f"export-{export_id}")
    gone = (await make.session())["id"]
    r = await client.delete(f"/sessions/{gone}", params={"permanent": "true"})
    assert r.status_code == 200, r.text
    done_op = r.headers["Operation-Id"]
    doomed = (await make.session(owner_id=owner))["id"]
    await client.post(f"/sessions/{doomed}/share", json={"user_ids": [reader]})
    r = await strict.delete(
        f"/sessions/{doomed}",
        params={"permanent": "true"},
        headers={"prefer": "respond-async", "authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 202, r.text
    pending = r.headers["Operation-Id"]
    yield World(
        client, strict, runtime, owner, reader, sid, wide, locked, export_id, done_op, pending
    )
    await runtime.temporal.get_workflow_handle(pending).terminate("test over")
    await runtime.pg.locks.unlock(hold, [locked])
    await runtime.pg.exports.delete(export_id)


Call = Callable[[World, dict[str, str]], Awaitable[httpx.Response]]


def _example(op_id: str) -> Any:
    return EXAMPLES.get(op_id, {}).get("request")


BODIES: dict[str, Any] = {
    "compare_post": {"session_ids": [UNKNOWN, UNKNOWN[:-1] + "1"]},
    "put_policy": {"auto_archive_inactive_days": 30},
    "cleanup": {"auto_archive_inactive_days": 30},
    "share_session": {"user_ids": ["someone"]},
    "import_session": {"export_id": UNKNOWN},
}


PARAMS: dict[str, dict[str, str]] = {
    "put_model_usage": {"model_type": "llm", "model_name": "m"},
    "compare_get": {"session_ids": f"{UNKNOWN},{UNKNOWN[:-1]}1"},
}


def _body(op_id: str, w: World) -> Any:
    body = BODIES.get(op_id, _example(op_id))
    if op_id == "merge_sessions":
        body = {**body, "source_session_ids": [w.sid, w.wide]}
    return body


def _path(path: str, session: str, w: World) -> str:
    return (
        path.replace("{session_id}", session)
        .replace("{operation_id}", w.done_op)
        .replace("{export_id}", w.writing_export)
        .replace("{user_id}", w.reader)
    )


async def _generic(
    w: World, method: str, path: str, op: dict[str, Any], status: int, h: dict[str, str]
) -> httpx.Response | None:
    op_id = op["operationId"]
    body = _body(op_id, w)
    query = PARAMS.get(op_id)
    if status == 400:  # a repeated header, answered at the edge
        headers = [*h.items(), ("x-user-id", "a"), ("x-user-id", "b")]
        return await w.client.request(method, _path(path, w.sid, w), headers=headers)
    if status == 401:
        return await w.strict.request(method, _path(path, w.sid, w), headers=h, json=body)
    if status == 413:
        pad = {"padding": "x" * 200} if isinstance(body, dict) else None
        h = {**h, "authorization": f"Bearer {KEY}"}
        return await w.strict.request(method, _path(path, w.sid, w), headers=h, json=pad)
    if status == 422:  # a NUL in the query string
        return await w.client.request(method, _path(path, w.sid, w) + "?x=%00", headers=h)
    if status == 404:
        url = path.replace("{session_id}", UNKNOWN).replace("{operation_id}", "merge-unknown")
        url = url.replace("{export_id}", UNKNOWN).replace("{user_id}", "u")
        if op_id == "merge_sessions":
            body = {**body, "source_session_ids": [w.sid, UNKNOWN]}
        return await w.client.request(method, url, headers=h, json=body, params=query)
    if status == 403:  # the reader may read sid, not change it
        h = {**h, "x-user-id": w.reader}
        if op_id == "create_session":
            body = {"name": "x", "owner_id": w.owner}
        if op_id == "merge_sessions":
            body = {**body, "source_session_ids": [w.sid, w.sid]}
            other = (await Factory(w.client).session(owner_id=w.owner))["id"]
            await w.client.post(f"/sessions/{other}/share", json={"user_ids": [w.reader]})
            body["source_session_ids"] = [w.sid, other]
        params = {"permanent": "true"} if op_id == "delete_session" else query
        url = _path(path, w.sid, w)
        return await w.client.request(method, url, headers=h, json=body, params=params)
    if status == 409:
        if op_id == "update_session":
            body = {"configuration": {"vector_size": 8}}
        url = _path(path, w.locked, w)
        return await w.client.request(method, url, headers=h, json=body, params=query)
    if status == 412:  # a weak tag never matches (RFC 9110)
        h = {**h, "if-match": 'W/"1"'}
        return await w.client.request(method, _path(path, w.sid, w), headers=h, json=body)
    return None


async def _import_409(w: World, h: dict[str, str]) -> httpx.Response:
    return await w.client.post("/sessions/import", json={"export_id": w.writing_export}, headers=h)


async def _merge_409(w: World, h: dict[str, str]) -> httpx.Response:
    body = {"source_session_ids": [w.sid, w.wide]}  # vector parameters differ
    return await w.client.post("/sessions/merge", json=body, headers=h)


async def _health_503(w: World, h: dict[str, str]) -> httpx.Response:
    with mock.patch.object(w.runtime.vectors, "ping", side_effect=RuntimeError("down")):
        return await w.client.get("/health", headers=h)


async def _unsupported(w: World, h: dict[str, str]) -> httpx.Response:
    headers = {**h, "content-type": "text/plain"}
    return await w.client.post("/sessions/import", content=b"hello", headers=headers)


SPECIAL: dict[tuple[str, str, int], Callable[[World, dict[str, str]], Awaitable[Any]]] = {
    ("POST", "/sessions/import", 409): _import_409,
    ("POST", "/sessions/import", 415): _unsupported,
    ("POST", "/sessions/merge", 409): _merge_409,
    ("GET", "/health", 503): _health_503,
    ("GET", "/health/ready", 503): lambda w, h: w.strict.get("/health/ready", headers=h),
    ("POST", "/operations/{operation_id}/cancel", 403): lambda w, h: w.client.post(
        f"/operations/{w.pending_op}/cancel", headers={**h, "x-user-id": w.reader}
    ),
}


def _documented_errors(spec: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (method, path, int(status))
        for method, path, op in operations(spec)
        for status in op["responses"]
        if status[0] in "45"
    ]


async def test_every_documented_error_is_answered_as_documented(
    spec: dict[str, Any], world: World
) -> None:
    """For each (route, documented error status): a real request gets that status, with a
    body valid against the documented schema, under each documented media type."""
    ops = {(m, p): op for m, p, op in operations(spec)}
    failures = []
    for method, path, status in _documented_errors(spec):
        op = ops[(method, path)]
        documented = op["responses"][str(status)]["content"]
        accepts = [m for m in PROBLEM_MEDIA_TYPES if m in documented] or list(documented)
        for media in accepts:
            h = {"accept": media} if media == "application/problem+json" else {}
            special = SPECIAL.get((method, path, status))
            if special is not None:
                r = await special(world, h)
            else:
                r = await _generic(world, method, path, op, status, h)
            where = f"{method} {path} {status} ({media})"
            if r is None:
                failures.append(f"{where}: no way to provoke it in this test")
                continue
            if r.status_code != status:
                failures.append(f"{where}: answered {r.status_code} {r.text[:200]}")
                continue
            got = r.headers["content-type"].split(";")[0]
            if got not in documented:
                failures.append(f"{where}: media type {got} not documented")
                continue
            if got != media:  # API.md F: application/json unless Accept names problem+json
                failures.append(f"{where}: answered as {got}")
            try:
                _validate(spec, documented[got]["schema"], r.json())
            except jsonschema.ValidationError as exc:
                failures.append(f"{where}: {exc.message}")
    assert not failures, "\n".join(failures)


# the hostile tables' statuses are documented


def _template(spec: dict[str, Any], method: str, url: str) -> str | None:
    for path, item in spec["paths"].items():
        if method.lower() not in item:
            continue
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path))
        if re.fullmatch(pattern, url):
            return path
    return None


async def test_statuses_seen_by_the_hostile_tables_are_documented(spec: dict[str, Any]) -> None:
    seen = [(c.method, c.path.replace("%00", "x"), c.status) for c in test_hostile_http.CASES]
    seen += [
        (method, "/sessions/{sid}" + sub, status)
        for _, method, sub, _, status, _ in test_bad_input.CASES
    ]
    seen += [(m, p.format(unknown=UNKNOWN), 404) for m, p in _UNKNOWN_SESSION_CASES]
    missing = []
    for method, url, status in seen:
        path = _template(spec, method, url.replace("{sid}", UNKNOWN).replace("{other}", UNKNOWN))
        assert path is not None, (method, url)
        if str(status) not in spec["paths"][path][method.lower()]["responses"]:
            missing.append((method, path, status))
    assert not missing, missing


_UNKNOWN_SESSION_CASES = [
    (m, p)
    for mark in getattr(test_bad_input.test_unknown_session_is_404, "pytestmark", [])
    if mark.name == "parametrize"
    for m, p in mark.args[1]
]
