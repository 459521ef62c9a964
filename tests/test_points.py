"""Section C: points, and what creating a session does to its collection."""

from __future__ import annotations

import uuid
from unittest import mock

import httpx

from session_service.services.runtime import Runtime
from tests.conftest import Factory


async def test_points_roundtrip_and_paging(client: httpx.AsyncClient, make: Factory) -> None:
    # Dot keeps vectors as sent (Cosine collections store them normalised, as Qdrant does)
    s = await make.session(configuration={"vector_size": 3, "distance": "Dot"})
    u = str(uuid.uuid4())
    pts = [{"id": i, "vector": [i, 0.5, -1.0], "payload": {"i": i}} for i in range(1, 6)]
    pts.append({"id": u, "vector": [0.1, 0.2, 0.3], "payload": {}})
    r = await client.put(f"/sessions/{s['id']}/points", json={"points": pts})
    assert r.status_code == 200 and r.json() == {"upserted": 6}
    got: list = []
    offset = None
    while True:
        params = {"limit": 4, "with_vectors": "true"}
        if offset is not None:
            params["offset"] = offset
        page = (await client.get(f"/sessions/{s['id']}/points", params=params)).json()
        got += page["points"]
        offset = page["next_offset"]
        if offset is None:
            break
    assert len(got) == 6
    by_id = {p["id"]: p for p in got}
    assert by_id[3]["payload"] == {"i": 3} and by_id[3]["vector"] == [3.0, 0.5, -1.0]
    assert u in by_id
    plain = (await client.get(f"/sessions/{s['id']}/points")).json()["points"]
    assert all(p["vector"] is None for p in plain)
    col = (await client.get(f"/sessions/{s['id']}/collection")).json()
    assert col == {
        "name": s["qdrant_collection_name"],
        "exists": True,
        "points_count": 6,
        "vector_size": 3,
        "distance": "Dot",
    }
    r = await client.post(f"/sessions/{s['id']}/points/delete", json={"ids": [1, 2, 99, u]})
    assert r.json() == {"deleted": 3}
    assert (await client.get(f"/sessions/{s['id']}/collection")).json()["points_count"] == 3


async def test_create_leaves_no_row_when_collection_fails(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner = Factory.user()
    with mock.patch.object(
        runtime.vectors, "ensure_collection", side_effect=RuntimeError("qdrant down")
    ):
        r = await client.post("/sessions", json={"name": "doomed", "owner_id": owner})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert "Traceback" not in r.text and "qdrant down" not in r.text
    assert (await client.get("/sessions", params={"owner_id": owner})).json() == []


async def test_idempotent_create(client: httpx.AsyncClient) -> None:
    owner = Factory.user()
    key = {"Idempotency-Key": f"create-{owner}"}
    body = {"name": "once", "owner_id": owner}
    first = await client.post("/sessions", json=body, headers=key)
    again = await client.post("/sessions", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await client.post("/sessions", json={**body, "name": "twice"}, headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert len((await client.get("/sessions", params={"owner_id": owner})).json()) == 1
