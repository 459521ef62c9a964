"""``POST /sessions/{id}/points/query`` (API.md section C): how the platform's clustering and
chatbot services search a session in the embedded mode."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Factory

DIM = 16


async def seeded(make: Factory, client: httpx.AsyncClient, **fields: Any) -> tuple[str, np.ndarray]:
    s = await make.session(configuration={"vector_size": DIM, "distance": "Cosine"}, **fields)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    pts = [
        {"id": i, "vector": v.tolist(), "payload": {"n": i, "kind": ["tab", "note"][i % 2]}}
        for i, v in enumerate(vectors)
    ]
    r = await client.put(f"/sessions/{s['id']}/points", json={"points": pts})
    assert r.status_code == 200, r.text
    return s["id"], vectors


async def test_nearest_neighbours_equal_a_brute_force_ranking(
    client: httpx.AsyncClient, make: Factory
) -> None:
    sid, vectors = await seeded(make, client)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(9)
    for _ in range(10):
        q = rng.standard_normal(DIM).astype(np.float32)
        r = await client.post(f"/sessions/{sid}/points/query", json={"vector": q.tolist()})
        assert r.status_code == 200, r.text
        got = r.json()["points"]
        expected = np.argsort(-(normed @ (q / np.linalg.norm(q))), kind="stable")[:10]
        assert [p["id"] for p in got] == expected.tolist()
        assert (
            got[0]["payload"]["n"] == int(expected[0])
            and "vector" not in got[0]
            or (got[0].get("vector") is None)
        )
        scores = [p["score"] for p in got]
        assert scores == sorted(scores, reverse=True)


async def test_filters_limit_and_options(client: httpx.AsyncClient, make: Factory) -> None:
    sid, _ = await seeded(make, client)
    body = {
        "vector": [1.0] * DIM,
        "limit": 100,
        "filter": {
            "must": [{"key": "kind", "match": {"value": "note"}}],
            "must_not": [{"key": "n", "range": {"gte": 20}}],
        },
        "with_payload": False,
        "with_vectors": True,
    }
    r = await client.post(f"/sessions/{sid}/points/query", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["points"]
    assert sorted(p["id"] for p in got) == list(range(1, 20, 2))
    assert all(p.get("payload") is None and len(p["vector"]) == DIM for p in got)
    any_of = {"should": [{"key": "n", "match": {"any": [3, 4, 250]}}]}
    r = await client.post(
        f"/sessions/{sid}/points/query", json={"vector": [1.0] * DIM, "filter": any_of}
    )
    assert sorted(p["id"] for p in r.json()["points"]) == [3, 4, 250]


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"filter": {"must": [{"key": "kind", "geo_radius": {}}]}}, "geo_radius"),
        ({"filter": {"must": [{"key": "kind", "match": {"text": "x"}}]}}, "text"),
        ({"filter": {"must": [{"has_id": [1]}]}}, "has_id"),
        ({"filter": {"must": [{"key": "n", "range": {}}]}}, "range needs"),
        ({"filter": {"must": [{"key": "n", "match": {"value": 1, "any": [1]}}]}}, "exactly one"),
        ({"filter": {"min_should": {"conditions": [], "min_count": 1}}}, "min_should"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"vector": [1.0] * (DIM - 1)}, "vector_size is 16"),
        ({"vector": [1.0] * (DIM - 1) + [float("nan")]}, "finite"),
        ({"score_threshold": "high"}, "score_threshold"),
        ({"params": {"hnsw_ef": 0}}, "hnsw_ef"),
        ({"params": {"quantization": {}}}, "quantization"),
        ({"filter": {"must": [{"key": "k\u0000", "match": {"value": "x"}}]}}, "NUL"),
        ({"filter": {"must": [{"key": "k", "match": {"value": 2**64}}]}}, "out of range"),
    ],
)
async def test_unsupported_or_bad_queries_are_422(
    client: httpx.AsyncClient, make: Factory, body: dict[str, Any], detail: str
) -> None:
    sid, _ = await seeded(make, client)
    payload = json.dumps({"vector": [1.0] * DIM, **body})  # NaN as JSON's NaN token
    r = await client.post(
        f"/sessions/{sid}/points/query",
        content=payload,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert detail in r.text


async def test_query_needs_read_access(client: httpx.AsyncClient, make: Factory) -> None:
    owner, reader, stranger = make.user(), make.user(), make.user()
    sid, _ = await seeded(make, client, owner_id=owner)
    r = await client.post(
        f"/sessions/{sid}/share", json={"user_ids": [reader], "permissions": ["read"]}
    )
    assert r.status_code == 200
    body = {"vector": [1.0] * DIM, "limit": 1}
    url = f"/sessions/{sid}/points/query"
    assert (await client.post(url, json=body, headers={"X-User-Id": reader})).status_code == 200
    assert (await client.post(url, json=body, headers={"X-User-Id": owner})).status_code == 200
    assert (await client.post(url, json=body, headers={"X-User-Id": stranger})).status_code == 404


async def test_a_session_without_points_answers_an_empty_list(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await make.session(configuration={"vector_size": 4})
    r = await client.post(f"/sessions/{s['id']}/points/query", json={"vector": [1, 2, 3, 4]})
    assert r.status_code == 200 and r.json() == {"points": []}
