"""Bad input: each gets its 4xx as problem+json with a useful detail, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Factory

BIG_METADATA = {"blob": "x" * (64 * 1024)}
CASES: list[tuple[str, str, str, Any, int, str]] = [
    # (name, method, path under the session ("" = the session), body, status, words in detail)
    ("malformed json", "PUT", "", "{not json", 422, "not valid JSON"),
    ("wrong type", "PUT", "", {"name": 5}, 422, "name"),
    ("name too long", "PUT", "", {"name": "n" * 201}, 422, "200"),
    ("empty name", "PUT", "", {"name": ""}, 422, "name"),
    ("description too long", "PUT", "", {"description": "d" * 2001}, 422, "2000"),
    ("too many tags", "PUT", "", {"tags": [f"t{i}" for i in range(51)]}, 422, "50"),
    ("tag too long", "PUT", "", {"tags": ["t" * 65]}, 422, "64"),
    ("metadata too large", "PUT", "", {"metadata": BIG_METADATA}, 422, "65536"),
    ("unknown status", "PUT", "", {"status": "frozen"}, 422, "status"),
    ("unknown field", "PUT", "", {"nmae": "typo"}, 422, "nmae"),
    ("vector size change", "PUT", "", {"configuration": {"vector_size": 8}}, 409, "vector_size"),
    ("stats wrong type", "PUT", "/stats", {"urls_processed": "many"}, 422, "urls_processed"),
    ("stats negative", "PUT", "/stats", {"urls_processed": -1}, 422, "urls_processed"),
    ("share no users", "POST", "/share", {"user_ids": []}, 422, "user_ids"),
    (
        "share bad permission",
        "POST",
        "/share",
        {"user_ids": ["u"], "permissions": ["root"]},
        422,
        "permissions",
    ),
    (
        "bad point id",
        "PUT",
        "/points",
        {"points": [{"id": "abc", "vector": [0.0] * 4}]},
        422,
        "UUID",
    ),
    (
        "negative point id",
        "PUT",
        "/points",
        {"points": [{"id": -3, "vector": [0.0] * 4}]},
        422,
        "2^64",
    ),
    (
        "wrong vector length",
        "PUT",
        "/points",
        {"points": [{"id": 1, "vector": [0.0] * 3}]},
        422,
        "vector_size is 4",
    ),
    (
        "vector not numbers",
        "PUT",
        "/points",
        {"points": [{"id": 1, "vector": ["a"] * 4}]},
        422,
        "vector",
    ),
    (
        "too many points",
        "PUT",
        "/points",
        {"points": [{"id": i, "vector": [0.0] * 4} for i in range(1001)]},
        422,
        "1000",
    ),
    (
        "duplicate point ids",
        "PUT",
        "/points",
        {"points": [{"id": 1, "vector": [0.0] * 4}, {"id": 1, "vector": [0.0] * 4}]},
        422,
        "unique",
    ),
    ("delete bad id", "POST", "/points/delete", {"ids": [1.5]}, 422, "ids"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    make: Factory,
    name: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    words: str,
) -> None:
    s = await make.session(configuration={"vector_size": 4}, metadata={"keep": True})
    await make.points(s["id"], [10, 11])
    before = (await client.get(f"/sessions/{s['id']}")).json()
    content = body if isinstance(body, str) else json.dumps(body)
    r = await client.request(
        method,
        f"/sessions/{s['id']}{path}",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == status
    assert words.lower() in problem["detail"].lower(), problem["detail"]
    assert "Traceback" not in r.text
    after = (await client.get(f"/sessions/{s['id']}")).json()
    assert after == before
    pts = (await client.get(f"/sessions/{s['id']}/points")).json()["points"]
    assert sorted(p["id"] for p in pts) == [10, 11]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "configuration": {"vector_size": 0}},
        {"name": "x", "configuration": {"vector_size": 65537}},
        {"name": "x", "configuration": {"distance": "Hamming"}},
        {"name": "x", "tags": "not-a-list"},
        {"description": "no name"},
    ],
)
async def test_bad_create_creates_nothing(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    owner = Factory.user()
    r = await client.post("/sessions", json={**body, "owner_id": owner})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    assert (await client.get("/sessions", params={"owner_id": owner})).json() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sessions/{unknown}"),
        ("PUT", "/sessions/{unknown}/stats"),
        ("GET", "/sessions/not-a-uuid"),
        ("POST", "/sessions/{unknown}/archive"),
        ("GET", "/sessions/{unknown}/points"),
        ("GET", "/sessions/{unknown}/collection"),
        ("DELETE", "/sessions/{unknown}"),
        ("GET", "/sessions/{unknown}/stats"),
    ],
)
async def test_unknown_session_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    url = path.format(unknown="00000000-0000-4000-8000-000000000000")
    body = {} if method == "PUT" else None
    r = await client.request(method, url, json=body)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert "not found" in r.json()["detail"]


async def test_body_over_32_mib_is_413(client: httpx.AsyncClient, make: Factory) -> None:
    s = await make.session()
    big = b'{"name": "' + b"x" * (32 * 1024 * 1024) + b'"}'
    r = await client.put(
        f"/sessions/{s['id']}", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/json"

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    r = await client.put(
        f"/sessions/{s['id']}", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    # a small Content-Length with chunked encoding too: chunked wins, so it is still counted
    r = await client.put(
        f"/sessions/{s['id']}",
        content=chunks(),
        headers={
            "content-type": "application/json",
            "content-length": "10",
            "transfer-encoding": "chunked",
        },
    )
    assert r.status_code == 413
    assert (await client.get(f"/sessions/{s['id']}")).json()["name"] == s["name"]


async def test_bad_page_token_and_limit(client: httpx.AsyncClient) -> None:
    r = await client.get("/sessions", params={"page_token": "garbage!"})
    assert r.status_code == 422 and "page_token" in r.json()["detail"]
    r = await client.get("/sessions", params={"limit": 1001})
    assert r.status_code == 422 and "limit" in r.json()["detail"]


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    r = await client.patch("/sessions")
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
