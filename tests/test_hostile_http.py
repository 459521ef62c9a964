"""Hostile HTTP input (issue 12): each is a 4xx problem, never a 500, and changes nothing.

One table of requests against two sessions of one owner; after each, both sessions, their
points, the owner's session list and the operations naming them are as they were.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import httpx
import pytest

from session_service.api.prefer import parse_prefer
from session_service.services.runtime import Runtime
from tests.conftest import Factory, OpsStack


@dataclass
class Hostile:
    """A request; ``{sid}``/``{other}`` in path, body and params name the two sessions."""

    name: str
    method: str
    path: str
    body: Any = None  # dict: sent as JSON (NaN and infinities as JSON5-ish literals); str: raw
    status: int = 422
    words: str = ""
    headers: list[tuple[str, str | bytes]] = field(default_factory=list)
    params: dict[str, str] | str | None = None
    content_type: list[str | bytes] = field(default_factory=lambda: ["application/json"])


def _token(*stamp_and_id: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(stamp_and_id)).encode()).decode()


PROBLEM = "application/problem+json"
ANY_ID = "00000000-0000-4000-8000-000000000000"
NUL = "a\u0000b"
DEEP = '{"name": "x", "metadata": {"a": ' + "[" * 10_000 + "]" * 10_000 + "}}"
MERGE = {"source_session_ids": ["{sid}", "{other}"]}
PART = {"name": "p", "point_ids": [10]}

CASES = [
    # NUL anywhere in text (item 8): 422 at the edge, nothing reaches Postgres
    Hostile("create name", "POST", "/sessions", {"name": NUL}, words="name"),
    Hostile("create tag", "POST", "/sessions", {"name": "x", "tags": [NUL]}, words="tags[0]"),
    Hostile("create owner", "POST", "/sessions", {"name": "x", "owner_id": NUL}, words="owner_id"),
    Hostile("metadata key", "POST", "/sessions", {"name": "x", "metadata": {NUL: 1}}, words="NUL"),
    Hostile(
        "nested metadata value",
        "POST",
        "/sessions",
        {"name": "x", "metadata": {"a": [{"b": NUL}]}},
        words="metadata.a[0].b",
    ),
    Hostile(
        "configuration text",
        "POST",
        "/sessions",
        {"name": "x", "configuration": {"embedding_model": NUL}},
        words="embedding_model",
    ),
    Hostile("lone surrogate", "POST", "/sessions", '{"name": "x\\ud800"}', words="surrogate"),
    Hostile("update name", "PUT", "/sessions/{sid}", {"name": NUL}, words="name"),
    Hostile("update description", "PUT", "/sessions/{sid}", {"description": NUL}),
    Hostile("stats metadata", "PUT", "/sessions/{sid}/stats", {"metadata": {"k": NUL}}),
    Hostile("share user", "POST", "/sessions/{sid}/share", {"user_ids": [NUL]}, words="user_ids"),
    Hostile(
        "point payload",
        "PUT",
        "/sessions/{sid}/points",
        {"points": [{"id": 1, "vector": [0.5] * 4, "payload": {"t": NUL}}]},
        words="payload",
    ),
    Hostile("compare id", "POST", "/sessions/compare", {"session_ids": ["{sid}", NUL]}),
    Hostile("merge target", "POST", "/sessions/merge", {**MERGE, "target_name": NUL}),
    Hostile("merge tags", "POST", "/sessions/merge", {**MERGE, "tags": [NUL]}),
    Hostile("merge metadata", "POST", "/sessions/merge", {**MERGE, "metadata": {NUL: NUL}}),
    Hostile("merge source id", "POST", "/sessions/merge", {"source_session_ids": ["{sid}", NUL]}),
    Hostile("split part name", "POST", "/sessions/{sid}/split", {"parts": [{**PART, "name": NUL}]}),
    Hostile(
        "split part tags", "POST", "/sessions/{sid}/split", {"parts": [{**PART, "tags": [NUL]}]}
    ),
    Hostile(
        "split part metadata",
        "POST",
        "/sessions/{sid}/split",
        {"parts": [{**PART, "metadata": {"m": NUL}}]},
        words="parts[0].metadata.m",
    ),
    Hostile("query owner", "GET", "/sessions", params="owner_id=a%00b", words="query"),
    Hostile("query tags", "GET", "/sessions", params="tags=x%00", words="query"),
    Hostile(
        "query model name",
        "PUT",
        "/sessions/{sid}/model-usage",
        params="model_type=llm&model_name=m%00",
        words="query",
    ),
    Hostile("path session id", "GET", "/sessions/{sid}%00", words="path"),
    Hostile("path user id", "DELETE", "/sessions/{sid}/share/u%00", words="path"),
    Hostile("user header", "GET", "/sessions/{sid}", status=400, headers=[("x-user-id", NUL)]),
    Hostile(
        "idempotency key header",
        "POST",
        "/sessions",
        {"name": "x"},
        status=400,
        headers=[("idempotency-key", NUL)],
        words="idempotency-key",
    ),
    # numbers a store can't hold (item 9)
    Hostile(
        "metadata 1e400", "PUT", "/sessions/{sid}", '{"metadata": {"a": 1e400}}', words="finite"
    ),
    Hostile("metadata NaN", "PUT", "/sessions/{sid}", '{"metadata": {"a": NaN}}', words="finite"),
    Hostile(
        "metadata past int64", "PUT", "/sessions/{sid}", {"metadata": {"a": 2**63}}, words="range"
    ),
    Hostile(
        "configuration 1e400",
        "POST",
        "/sessions",
        '{"name": "x", "configuration": {"clustering_params": {"eps": -1e400}}}',
        words="finite",
    ),
    Hostile(
        "vector NaN",
        "PUT",
        "/sessions/{sid}/points",
        '{"points": [{"id": 1, "vector": [0.5, NaN, 0.5, 0.5]}]}',
        words="finite",
    ),
    Hostile(
        "vector Infinity",
        "PUT",
        "/sessions/{sid}/points",
        '{"points": [{"id": 1, "vector": [0.5, 0.5, Infinity, 0.5]}]}',
        words="finite",
    ),
    Hostile(
        "vector 1e400",
        "PUT",
        "/sessions/{sid}/points",
        '{"points": [{"id": 1, "vector": [0.5, 0.5, 0.5, -1e400]}]}',
        words="finite",
    ),
    Hostile(
        "vector huge int",
        "PUT",
        "/sessions/{sid}/points",
        '{"points": [{"id": 1, "vector": [1, 2, 3, 1' + "0" * 400 + "]}]}",
        words="range",
    ),
    Hostile(
        "stats past int64",
        "PUT",
        "/sessions/{sid}/stats",
        {"urls_processed": 99999999999999999999},
        words="urls_processed",
    ),
    Hostile(
        "stats metadata past int64",
        "PUT",
        "/sessions/{sid}/stats",
        {"metadata": {"n": -(2**63) - 1}},
        words="range",
    ),
    Hostile(
        "number of 5000 digits",
        "PUT",
        "/sessions/{sid}",
        '{"metadata": {"n": ' + "9" * 5000 + "}}",
        words="digits",
    ),
    Hostile("limit past int64", "GET", "/sessions", params="limit=99999999999999999999"),
    Hostile("negative limit", "GET", "/sessions", params="limit=-1", words="limit"),
    Hostile("points limit huge", "GET", "/sessions/{sid}/points", params="limit=1" + "0" * 30),
    # nesting: a recursion bomb for every JSON encoder after the parser
    Hostile("metadata 10,000 deep", "POST", "/sessions", DEEP, words="deep"),
    Hostile(
        "metadata 40 deep",
        "PUT",
        "/sessions/{sid}",
        '{"metadata": {"a": ' + "[" * 40 + "]" * 40 + "}}",
        words="32 levels",
    ),
    Hostile("body not UTF-8", "PUT", "/sessions/{sid}", b'{"name": "\xff"}', words="UTF-8"),
    # headers read differently by different layers (items 2, 7, 9)
    Hostile(
        "two content types",
        "PUT",
        "/sessions/{sid}",
        {"name": "y"},
        status=400,
        content_type=["application/json", "application/gzip"],
        words="content-type",
    ),
    Hostile(
        "two user ids",
        "PUT",
        "/sessions/{sid}",
        {"name": "y"},
        status=400,
        headers=[("x-user-id", "owner-a"), ("x-user-id", "owner-b")],
        words="x-user-id",
    ),
    Hostile(
        "content type not UTF-8",
        "POST",
        "/sessions/import",
        "{}",
        status=400,
        content_type=[b"application/gzip\xff"],
        words="ASCII",
    ),
    Hostile(
        "weak If-Match",
        "PUT",
        "/sessions/{sid}",
        {"name": "y"},
        status=412,
        headers=[("if-match", 'W/"{version}"')],
        words="strong",
    ),
    Hostile(
        "If-Match past bigint",
        "PUT",
        "/sessions/{sid}",
        {"name": "y"},
        status=412,
        headers=[("if-match", '"99999999999999999999"')],
    ),
    Hostile(
        "If-Match non-ASCII digit",
        "PUT",
        "/sessions/{sid}",
        {"name": "y"},
        status=412,
        headers=[("if-match", b'"\xb2"')],
    ),
    Hostile(
        "page token year 9999",
        "GET",
        "/sessions",
        params={"page_token": _token("9999-12-31T23:59:59-23:59", ANY_ID)},
        words="page_token",
    ),
    Hostile(
        "page token year 1",
        "GET",
        "/sessions",
        params={"page_token": _token("0001-01-01T00:00:00+23:59", ANY_ID)},
        words="page_token",
    ),
    Hostile(
        "page token without zone",
        "GET",
        "/sessions",
        params={"page_token": _token("2024-01-01T00:00:00", ANY_ID)},
        words="page_token",
    ),
    Hostile(
        "page token nested",
        "GET",
        "/sessions",
        params={"page_token": base64.urlsafe_b64encode(b"[" * 5000).decode()},
        words="page_token",
    ),
    # the routes added with the operations record and cold sessions (API.md B, G)
    *[
        Hostile(
            f"operations {name}",
            "GET",
            "/operations",
            params={"page_token": token},
            words="page_token",
        )
        for name, token in [
            ("page token year 9999", _token("9999-12-31T23:59:59-23:59", ANY_ID)),
            ("page token year 1", _token("0001-01-01T00:00:00+23:59", ANY_ID)),
            ("page token without zone", _token("2024-01-01T00:00:00", ANY_ID)),
            ("page token NUL id", _token("2024-01-01T00:00:00+00:00", NUL)),
            ("page token nested", base64.urlsafe_b64encode(b"[" * 5000).decode()),
            ("page token not base64", "%%%%"),
        ]
    ],
    Hostile(
        "operations limit past int64", "GET", "/operations", params="limit=99999999999999999999"
    ),
    Hostile("offloaded after NUL", "GET", "/sessions/offloaded", params={"after": NUL}),
    Hostile("offloaded after junk", "GET", "/sessions/offloaded", params={"after": "x" * 5000}),
    Hostile(
        "offloaded limit past int64",
        "GET",
        "/sessions/offloaded",
        params="limit=99999999999999999999",
    ),
    Hostile("offload NUL id", "POST", "/sessions/a%00b/offload", status=422),
    Hostile("reload NUL id", "POST", "/sessions/a%00b/reload", status=422),
    Hostile(
        "offload NUL idempotency key",
        "POST",
        "/sessions/{sid}/offload",
        status=400,
        headers=[("idempotency-key", NUL)],
    ),
    # where the first service answered 400 (item 12)
    Hostile(
        "merge one source", "POST", "/sessions/merge", {"source_session_ids": ["{sid}"]}, 400, "two"
    ),
    Hostile("split without parts", "POST", "/sessions/{sid}/split", {"parts": []}, 400, "part"),
    Hostile("compare one", "GET", "/sessions/compare", status=400, params="session_ids={sid}"),
    Hostile(
        "unknown model type",
        "PUT",
        "/sessions/{sid}/model-usage",
        status=400,
        params="model_type=vision&model_name=m",
    ),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in names.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {_fill(k, names): _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


async def _state(client: httpx.AsyncClient, owner: str, ids: list[str]) -> Any:
    sessions = (await client.get("/sessions", params={"owner_id": owner})).json()
    points = [(await client.get(f"/sessions/{i}/points")).json() for i in ids]
    ops = [(await client.get("/operations", params={"session_id": i})).json() for i in ids]
    return sessions, points, ops


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_request_is_a_4xx_problem_and_changes_nothing(
    client: httpx.AsyncClient, make: Factory, case: Hostile
) -> None:
    owner = make.user()
    sid = (await make.session(owner_id=owner, configuration={"vector_size": 4}))["id"]
    other = (await make.session(owner_id=owner, configuration={"vector_size": 4}))["id"]
    await make.points(sid, [10, 11])
    version = str((await client.get(f"/sessions/{sid}")).json()["version"])
    names = {"sid": sid, "other": other, "version": version}
    before = await _state(client, owner, [sid, other])

    body = _fill(case.body, names)
    if isinstance(body, dict):
        body = json.dumps({"owner_id": owner, **body} if case.path == "/sessions" else body)
    headers = [("content-type", t) for t in case.content_type]
    headers += [(k, _fill(v, names)) for k, v in case.headers]
    params = _fill(case.params, names)
    r = await client.request(
        case.method,
        _fill(case.path, names),
        content=body.encode() if isinstance(body, str) else body,
        headers=headers,
        params=params,
    )

    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/json"
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == case.status
    assert case.words.lower() in problem["detail"].lower(), problem["detail"]
    assert "Traceback" not in r.text
    assert await _state(client, owner, [sid, other]) == before


async def test_two_content_types_cant_smuggle_a_body_past_the_limit(
    client: httpx.AsyncClient,
) -> None:
    """The limit exempted uploads by the last Content-Type while the route read the body by
    the first: a streamed JSON body of any size went into memory (item 2)."""

    async def chunks() -> Any:
        yield b'{"session": {"name": "'
        for _ in range(34):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    for pair in (
        ("application/json", "application/gzip"),
        ("application/gzip", "application/json"),
    ):
        r = await client.post(
            "/sessions/import",
            content=chunks(),
            headers=[("content-type", pair[0]), ("content-type", pair[1])],
        )
        assert r.status_code == 400, r.text[:300]
        assert "content-type" in r.json()["detail"]


async def test_error_media_type_follows_accept(client: httpx.AsyncClient) -> None:
    """application/json unless Accept names application/problem+json (API.md F): the
    gateway breaks on any other type. Middleware problems (413, 400) follow it too."""
    url = f"/sessions/{ANY_ID}"
    cases = {
        None: "application/json",
        "application/json": "application/json",
        "application/problem+json": "application/problem+json",
        "application/json, application/problem+json;q=0.5": "application/problem+json",
        "application/problem+json;q=0": "application/json",
    }
    for accept, media in cases.items():
        headers = {"accept": accept} if accept else {}
        r = await client.get(url, headers=headers)
        assert r.status_code == 404 and r.headers["content-type"] == media, accept
    big = b"x" * (33 * 1024 * 1024)
    for accept, media in (
        (None, "application/json"),
        ("application/problem+json", "application/problem+json"),
    ):
        headers = {"content-type": "application/json", **({"accept": accept} if accept else {})}
        r = await client.put(url, content=big, headers=headers)
        assert r.status_code == 413 and r.headers["content-type"] == media
        dup = [*headers.items(), ("x-user-id", "a"), ("x-user-id", "b")]
        r = await client.get(url, headers=dup)
        assert r.status_code == 400 and r.headers["content-type"] == media


async def test_internal_error_media_type_follows_accept(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A 500 is answered outside every middleware, so it picks its media type itself."""
    fault = mock.patch.object(runtime.vectors, "ensure_collection", side_effect=RuntimeError)
    for accept, media in ((None, "application/json"), (PROBLEM, PROBLEM)):
        with fault:
            r = await client.post(
                "/sessions", json={"name": "x"}, headers={"accept": accept} if accept else {}
            )
        assert r.status_code == 500 and r.headers["content-type"] == media


async def test_if_match_compares_strongly(client: httpx.AsyncClient, make: Factory) -> None:
    """A weak tag never satisfies If-Match (RFC 9110), even naming the current version."""
    s = await make.session()
    etag = (await client.get(f"/sessions/{s['id']}")).headers["ETag"]
    weak = await client.put(
        f"/sessions/{s['id']}", json={"name": "w"}, headers={"If-Match": "W/" + etag}
    )
    assert weak.status_code == 412
    ok = await client.put(f"/sessions/{s['id']}", json={"name": "s"}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.json()["name"] == "s"


async def test_default_page_is_1000(client: httpx.AsyncClient, make: Factory) -> None:
    """The first service returned every session and its callers read one page (API.md F)."""
    owner = make.user()
    for _ in range(101):
        await make.session(owner_id=owner)
    r = await client.get("/sessions", params={"owner_id": owner})
    assert len(r.json()) == 101 and "Link" not in r.headers


async def test_retention_days_of_zero_are_accepted(client: httpx.AsyncClient) -> None:
    policy = {"auto_archive_inactive_days": 0, "auto_delete_archived_days": 0, "max_age_days": 0}
    r = await client.put("/sessions/retention-policy", json={**policy, "enabled": False})
    try:
        assert r.status_code == 200, r.text
        stored = (await client.get("/sessions/retention-policy")).json()["retention_policy"]
        assert {k: stored[k] for k in policy} == policy
        assert (
            await client.put("/sessions/retention-policy", json={"max_age_days": -1})
        ).status_code == 422
    finally:
        await client.put("/sessions/retention-policy", json={})


@pytest.mark.parametrize(
    ("header", "wait", "applied"),
    [
        ("wait=2.5", 2.5, "wait=2.5"),
        ("wait=10", 10.0, "wait=10"),
        ("wait=1000", 300.0, "wait=300"),
        ("wait=99999999999999999999", 300.0, "wait=300"),
        ("wait=nan", 7.0, None),
        ("wait=-1", 7.0, None),
        ("respond-async, wait=3", 0.0, "respond-async"),
    ],
)
def test_prefer_wait_applied_is_what_was_applied(
    header: str, wait: float, applied: str | None
) -> None:
    assert parse_prefer(header, 7.0) == (wait, applied)


async def test_prefer_fractional_wait_is_honoured(
    ops_stack: OpsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker polls this stack's queue, so the operation can't finish: the request waits
    what ``Prefer`` asked (then reads the operation, whose progress query times out after
    5 s), not the default of 60 s, and answers 202 (item 13)."""
    rt = ops_stack.runtime
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"sync_wait_seconds": 60}))
    s = await ops_stack.make.session()
    start = time.monotonic()
    r = await ops_stack.client.delete(
        f"/sessions/{s['id']}", params={"permanent": "true"}, headers={"Prefer": "wait=2.5"}
    )
    took = time.monotonic() - start
    try:
        assert r.status_code == 202, r.text
        assert r.headers["Preference-Applied"] == "wait=2.5"
        assert 2.4 <= took < 30, took
    finally:
        handle = rt.temporal.get_workflow_handle(r.headers["Operation-Id"])
        await handle.terminate("test over")
