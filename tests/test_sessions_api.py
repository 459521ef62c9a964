"""Success shapes of API.md section A (the quick half) against the real stores."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx

from session_service.services.runtime import Runtime
from tests.conftest import Factory

SESSION_KEYS = {
    "id",
    "name",
    "description",
    "status",
    "created_at",
    "updated_at",
    "owner_id",
    "shared_with",
    "qdrant_collection_name",
    "configuration",
    "processing_stats",
    "model_usage_history",
    "tags",
    "metadata",
}


async def test_health_reports_each_part(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["service"] == "session"
    assert body["checks"] == {"postgres": "ok", "temporal": "ok", "qdrant": "ok"}


async def test_create_returns_session_model_and_collection_exists(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    r = await client.post(
        "/sessions",
        json={
            "name": "Research",
            "description": "tabs",
            "owner_id": "alice",
            "tags": ["a", "b"],
            "metadata": {"k": 1},
            "configuration": {"vector_size": 8, "distance": "Dot"},
        },
    )
    assert r.status_code == 200
    s = r.json()
    assert SESSION_KEYS <= s.keys()
    assert s["status"] == "active" and s["owner_id"] == "alice" and s["shared_with"] == []
    assert s["qdrant_collection_name"] == f"session_{uuid.UUID(s['id']).hex}"
    assert s["configuration"] == {
        "clustering_params": {},
        "embedding_model": None,
        "llm_model": None,
        "processing_options": {},
        "vector_size": 8,
        "distance": "Dot",
    }
    assert s["processing_stats"] == {
        "urls_processed": 0,
        "content_analyzed": 0,
        "clusters_generated": 0,
        "embeddings_created": 0,
        "last_processing_time": None,
    }
    assert s["model_usage_history"] == {
        "llm_models_used": [],
        "embedding_models_used": [],
        "model_switches": 0,
        "last_model_switch": None,
    }
    assert datetime.fromisoformat(s["created_at"]).tzinfo is not None
    params = await runtime.vectors.collection_params(s["qdrant_collection_name"])
    assert params is not None and params.vector_size == 8 and params.distance == "Dot"


async def test_defaults_for_configuration(make: Factory) -> None:
    s = await make.session()
    assert s["configuration"]["vector_size"] == 384
    assert s["configuration"]["distance"] == "Cosine"


async def test_get_update_merges_metadata_and_bumps_etag(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await make.session(metadata={"a": 1, "b": 2})
    r = await client.get(f"/sessions/{s['id']}")
    assert r.status_code == 200 and r.json()["id"] == s["id"]
    etag = r.headers["ETag"]
    r = await client.put(
        f"/sessions/{s['id']}",
        json={
            "name": "renamed",
            "metadata": {"b": 3, "c": 4},
            "tags": ["x"],
            "configuration": {"llm_model": "gpt"},
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "renamed" and body["tags"] == ["x"]
    assert body["metadata"] == {"a": 1, "b": 3, "c": 4}
    assert body["configuration"]["llm_model"] == "gpt"
    assert body["configuration"]["vector_size"] == 384
    assert r.headers["ETag"] != etag
    assert body["updated_at"] > s["updated_at"]


async def test_if_match_guards_lost_updates(client: httpx.AsyncClient, make: Factory) -> None:
    s = await make.session()
    etag = (await client.get(f"/sessions/{s['id']}")).headers["ETag"]
    ok = await client.put(f"/sessions/{s['id']}", json={"name": "one"}, headers={"If-Match": etag})
    assert ok.status_code == 200
    stale = await client.put(
        f"/sessions/{s['id']}", json={"name": "two"}, headers={"If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/json"
    assert (await client.get(f"/sessions/{s['id']}")).json()["name"] == "one"


async def test_soft_delete_archive_restore(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime
) -> None:
    s = await make.session()
    r = await client.delete(f"/sessions/{s['id']}")
    assert r.status_code == 200 and r.json()["permanent"] is False and r.json()["message"]
    assert (await client.get(f"/sessions/{s['id']}")).json()["status"] == "deleted"
    assert await runtime.vectors.collection_params(s["qdrant_collection_name"]) is not None
    r = await client.post(f"/sessions/{s['id']}/archive")
    assert r.status_code == 200 and "message" in r.json()
    assert (await client.get(f"/sessions/{s['id']}")).json()["status"] == "archived"
    r = await client.post(f"/sessions/{s['id']}/restore")
    assert r.status_code == 200
    assert (await client.get(f"/sessions/{s['id']}")).json()["status"] == "active"


async def test_share_unshare_and_collaborators(client: httpx.AsyncClient, make: Factory) -> None:
    s = await make.session(owner_id="owner-1")
    r = await client.post(
        f"/sessions/{s['id']}/share",
        json={"user_ids": ["u1", "u2", "u1"], "permissions": ["write"]},
    )
    assert r.status_code == 200
    assert r.json()["shared_with"] == ["u1", "u2"] and r.json()["status"] == "shared"
    r = await client.post(f"/sessions/{s['id']}/share", json={"user_ids": ["u1", "u3"]})
    assert r.json()["shared_with"] == ["u1", "u2", "u3"]
    c = (await client.get(f"/sessions/{s['id']}/collaborators")).json()
    assert c["session_id"] == s["id"] and c["owner_id"] == "owner-1"
    assert c["total_collaborators"] == 4
    assert c["permissions"] == {"u1": ["read"], "u2": ["write"], "u3": ["read"]}
    for user in ("u1", "u2"):
        assert (await client.delete(f"/sessions/{s['id']}/share/{user}")).status_code == 200
    assert (await client.get(f"/sessions/{s['id']}")).json()["status"] == "shared"
    assert (await client.delete(f"/sessions/{s['id']}/share/u3")).status_code == 200
    after = (await client.get(f"/sessions/{s['id']}")).json()
    assert after["status"] == "active" and after["shared_with"] == []
    # a user who is no collaborator: 200 as in the first service, and nothing changes
    again = await client.delete(f"/sessions/{s['id']}/share/u3")
    assert again.status_code == 200, again.text
    assert (await client.get(f"/sessions/{s['id']}")).json() == after


async def test_stats_increment_and_read(client: httpx.AsyncClient, make: Factory) -> None:
    s = await make.session()
    await make.points(s["id"], [1, 2, 3], size=384)
    r = await client.put(
        f"/sessions/{s['id']}/stats",
        json={"urls_processed": 5, "embeddings_created": 3, "metadata": {"source": "ingest"}},
    )
    assert r.status_code == 200 and "message" in r.json()
    await client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 2})
    st = (await client.get(f"/sessions/{s['id']}/stats")).json()
    assert st["session_id"] == s["id"]
    assert st["session_stats"]["urls_processed"] == 7
    assert st["session_stats"]["embeddings_created"] == 3
    assert st["session_stats"]["last_processing_time"] is not None
    assert st["collection_stats"]["points_count"] == 3
    assert st["session_age_days"] == 0
    assert st["collaboration_info"] == {"is_shared": False, "collaborator_count": 0}
    full = (await client.get(f"/sessions/{s['id']}")).json()
    assert full["metadata"]["source"] == "ingest"
    assert "last_stats_update" in full["metadata"]


async def test_400_concurrent_stats_calls_add_up_exactly(
    client: httpx.AsyncClient, make: Factory
) -> None:
    s = await make.session()

    async def bump(i: int) -> int:
        r = await client.put(
            f"/sessions/{s['id']}/stats",
            json={"urls_processed": 1, "content_analyzed": 2, "metadata": {f"k{i % 5}": i}},
        )
        return r.status_code

    codes = await asyncio.gather(*(bump(i) for i in range(400)))
    assert codes == [200] * 400
    stats = (await client.get(f"/sessions/{s['id']}")).json()["processing_stats"]
    assert stats["urls_processed"] == 400
    assert stats["content_analyzed"] == 800


async def test_every_concurrent_stats_call_bumps_the_etag(
    client: httpx.AsyncClient, make: Factory
) -> None:
    """Coalesced increments still count each request in ``version``, so an ETag taken
    before a burst is stale after it and the burst's size shows in the version."""
    s = await make.session()
    before = int((await client.get(f"/sessions/{s['id']}")).headers["etag"].strip('"'))
    codes = await asyncio.gather(
        *(
            client.put(f"/sessions/{s['id']}/stats", json={"clusters_generated": 1})
            for _ in range(150)
        )
    )
    assert [r.status_code for r in codes] == [200] * 150
    r = await client.get(f"/sessions/{s['id']}")
    assert int(r.headers["etag"].strip('"')) == before + 150
    assert r.json()["processing_stats"]["clusters_generated"] == 150


async def test_one_oversized_metadata_in_a_burst_fails_only_its_caller(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime, monkeypatch: Any
) -> None:
    """A slow database makes the burst coalesce; the merged metadata then breaks the
    96 KiB row limit because of one caller, and only that caller gets the 422."""
    s = await make.session(metadata={"bulk": "x" * 60_000})
    real = runtime.pg.sessions.increment_stats
    updates: list[int] = []

    async def slow(*args: Any) -> None:
        updates.append(args[3])
        await asyncio.sleep(0.05)
        await real(*args)

    monkeypatch.setattr(runtime.pg.sessions, "increment_stats", slow)
    small = [
        client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 1, "metadata": {"k": i}})
        for i in range(40)
    ]
    big = client.put(
        f"/sessions/{s['id']}/stats",
        json={"urls_processed": 1000, "metadata": {"big": "y" * 40_000}},
    )
    answers = await asyncio.gather(*small[:20], big, *small[20:])
    codes = [r.status_code for r in answers]
    assert codes[20] == 422 and "metadata" in answers[20].json()["detail"]
    assert codes[:20] + codes[21:] == [200] * 40
    assert max(updates) > 1, "the burst was not coalesced; the test proves nothing"
    body = (await client.get(f"/sessions/{s['id']}")).json()
    assert body["processing_stats"]["urls_processed"] == 40
    assert "big" not in body["metadata"] and body["metadata"]["k"] in range(40)


async def test_model_usage(client: httpx.AsyncClient, make: Factory) -> None:
    s = await make.session()
    for name in ("gpt", "gpt", "claude"):
        r = await client.put(
            f"/sessions/{s['id']}/model-usage", params={"model_type": "llm", "model_name": name}
        )
        assert r.status_code == 200
    r = await client.put(
        f"/sessions/{s['id']}/model-usage",
        params={"model_type": "embedding", "model_name": "minilm"},
    )
    mu = (await client.get(f"/sessions/{s['id']}")).json()["model_usage_history"]
    assert mu["llm_models_used"] == ["gpt", "claude"]
    assert mu["embedding_models_used"] == ["minilm"]
    assert mu["model_switches"] == 4 and mu["last_model_switch"] is not None
    bad = await client.put(
        f"/sessions/{s['id']}/model-usage", params={"model_type": "vision", "model_name": "x"}
    )
    assert bad.status_code == 400
    assert "llm" in bad.json()["detail"]


async def test_compare_get_and_post(client: httpx.AsyncClient, make: Factory) -> None:
    a = await make.session()
    b = await make.session()
    await client.put(f"/sessions/{a['id']}/stats", json={"urls_processed": 4})
    await client.put(
        f"/sessions/{a['id']}/model-usage", params={"model_type": "llm", "model_name": "m"}
    )
    await client.put(
        f"/sessions/{b['id']}/model-usage", params={"model_type": "llm", "model_name": "m"}
    )
    r1 = await client.get("/sessions/compare", params={"session_ids": f"{a['id']},{b['id']}"})
    r2 = await client.post("/sessions/compare", json={"session_ids": [a["id"], b["id"]]})
    for r in (r1, r2):
        assert r.status_code == 200
        body = r.json()
        assert [s["id"] for s in body["sessions"]] == [a["id"], b["id"]]
        summary = body["comparison_summary"]
        assert summary["total_sessions"] == 2
        assert summary["status_distribution"] == {"active": 2}
        assert summary["model_usage_overlap"]["common_llm_models"] == ["m"]
        assert summary["processing_differences"]["urls_processed"]["max"] == 4
    # fewer than two sessions: 400, as the first service answered
    one = await client.get("/sessions/compare", params={"session_ids": a["id"]})
    assert one.status_code == 400 and "two" in one.json()["detail"]
    same = await client.post("/sessions/compare", json={"session_ids": [a["id"], a["id"]]})
    assert same.status_code == 400 and "two" in same.json()["detail"]


async def test_retention_policy_roundtrip_not_shadowed(client: httpx.AsyncClient) -> None:
    r = await client.get("/sessions/retention-policy")
    assert r.status_code == 200
    assert set(r.json()["retention_policy"]) >= {
        "max_age_days",
        "max_sessions_per_user",
        "auto_archive_inactive_days",
        "auto_delete_archived_days",
        "schedule",
        "enabled",
    }
    assert r.json()["description"]
    policy = {
        "max_age_days": 365,
        "max_sessions_per_user": 10,
        "auto_archive_inactive_days": 7,
        "auto_delete_archived_days": 30,
        "schedule": "0 4 * * *",
        "enabled": False,
    }
    r = await client.put("/sessions/retention-policy", json=policy)
    assert r.status_code == 200 and r.json()["new_policy"] == policy
    assert (await client.get("/sessions/retention-policy")).json()["retention_policy"] == policy
    # leave the default for other tests
    await client.put("/sessions/retention-policy", json={})


async def test_list_filters_order_and_paging(client: httpx.AsyncClient, make: Factory) -> None:
    owner = make.user()
    made = [await make.session(owner_id=owner, tags=[f"t{i % 2}"]) for i in range(5)]
    await client.post(f"/sessions/{made[0]['id']}/archive")
    r = await client.get("/sessions", params={"owner_id": owner})
    ids = [s["id"] for s in r.json()]
    assert ids[0] == made[0]["id"]  # archived last: newest updated_at
    assert set(ids) == {s["id"] for s in made}
    stamps = [s["updated_at"] for s in r.json()]
    assert stamps == sorted(stamps, reverse=True)
    archived = await client.get("/sessions", params={"owner_id": owner, "status": "archived"})
    assert [s["id"] for s in archived.json()] == [made[0]["id"]]
    tagged = await client.get("/sessions", params={"owner_id": owner, "tags": "t1,zz"})
    assert {s["id"] for s in tagged.json()} == {made[1]["id"], made[3]["id"]}
    # paging: 2 per page, Link header to the next
    seen: list[str] = []
    url: str | None = f"/sessions?owner_id={owner}&limit=2"
    pages = 0
    while url:
        page = await client.get(url)
        assert page.status_code == 200
        seen += [s["id"] for s in page.json()]
        link = page.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        pages += 1
    assert pages == 3 and seen == ids


async def test_health_is_503_when_a_part_is_down(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    from unittest import mock

    with mock.patch.object(runtime.vectors, "ping", side_effect=RuntimeError("gone")):
        r = await client.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["postgres"] == "ok" and body["checks"]["qdrant"].startswith("error")


async def test_stats_callers_get_503_not_a_hang_when_the_update_is_cancelled(
    client: httpx.AsyncClient, make: Factory, runtime: Runtime, monkeypatch: Any
) -> None:
    """The shared UPDATE is cancelled (the service shutting down): every caller waiting
    on it, or queued behind it, is answered 503; the next call works again."""
    s = await make.session()
    started = asyncio.Event()

    async def hang(*args: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(runtime.pg.sessions, "increment_stats", hang)
    calls = [
        asyncio.create_task(client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 1}))
        for _ in range(5)
    ]
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.05)  # the others queue behind the hung UPDATE
    drains = runtime.sessions._stats._draining  # noqa: SLF001 - the fault is injected here
    drains[s["id"]].cancel()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert [r.status_code for r in answers] == [503] * 5
    assert "may or may not have been applied" in answers[0].json()["detail"]
    monkeypatch.undo()
    ok = await client.put(f"/sessions/{s['id']}/stats", json={"urls_processed": 2})
    assert ok.status_code == 200
    body = (await client.get(f"/sessions/{s['id']}")).json()
    assert body["processing_stats"]["urls_processed"] == 2
