"""The vector-store contract, held to the same checks on both backends.

``edge``: Qdrant Edge shards on disk (the embedded engine). ``server``: the
qdrant-client backend on its in-process stand-in for a Qdrant server (local
mode ``:memory:``), so the server path keeps its coverage without a server.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from session_service.domain.point_query import PointQuery
from session_service.stores.edge_store import EdgeStore
from session_service.stores.qdrant_server import QdrantServerStore
from session_service.stores.vector_store import StoredPoint, VectorStore

DIM = 8


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s: VectorStore = (
        EdgeStore(tmp_path / "vectors", open_shards=2)
        if request.param == "edge"
        else QdrantServerStore.in_memory()
    )
    yield s
    s.close()


def name() -> str:
    return f"session_{uuid.uuid4().hex}"


def points(n: int, *, seed: int = 0, start: int = 0) -> list[StoredPoint]:
    rng = np.random.default_rng(seed)
    return [
        StoredPoint(
            id=start + i,
            vector=rng.standard_normal(DIM).astype(np.float32).tolist(),
            payload={"n": start + i, "group": ["a", "b", "c"][i % 3], "even": i % 2 == 0},
        )
        for i in range(n)
    ]


async def test_collections_are_created_and_dropped_idempotently(store: VectorStore) -> None:
    c = name()
    assert not await store.exists(c)
    assert await store.collection_params(c) is None
    assert await store.count(c) == 0
    await store.ensure_collection(c, DIM, "Dot")
    await store.ensure_collection(c, DIM, "Dot")
    params = await store.collection_params(c)
    assert params is not None
    assert (params.vector_size, params.distance, params.points_count) == (DIM, "Dot", 0)
    assert c in await store.collection_names()
    await store.drop_collection(c)
    await store.drop_collection(c)
    assert not await store.exists(c)
    assert c not in await store.collection_names()


async def test_scroll_pages_every_point_once_in_id_order(store: VectorStore) -> None:
    c = name()
    await store.ensure_collection(c, DIM, "Euclid")
    uuids = sorted(str(uuid.uuid4()) for _ in range(5))
    written = [*points(23), *(StoredPoint(u, [1.0] * DIM, {"u": True}) for u in uuids)]
    assert await store.upsert(c, written) == 28
    seen: list[int | str] = []
    offset: int | str | None = None
    while True:
        page, offset = await store.scroll(c, limit=4, offset=offset, with_vectors=True)
        seen += [p.id for p in page]
        assert all(p.vector is not None and len(p.vector) == DIM for p in page)
        if offset is None:
            break
    assert seen[:23] == list(range(23))
    assert sorted(str(i) for i in seen[23:]) == uuids
    rows, nxt = await store.scroll_rows(c, limit=30)
    assert nxt is None and rows.vectors.shape == (28, DIM) and rows.vectors.dtype == np.float32
    assert rows.payloads[3] == {"n": 3, "group": "a", "even": False}


async def test_copy_page_moves_every_point_once(store: VectorStore) -> None:
    source, target = name(), name()
    for c in (source, target):
        await store.ensure_collection(c, DIM, "Dot")
    written = [*points(25), StoredPoint(str(uuid.uuid4()), [0.5] * DIM, {"u": 1})]
    await store.upsert(source, written)
    await store.upsert(target, [StoredPoint(3, [9.0] * DIM, {"old": True})])
    moved, offset = 0, None
    while True:
        n, offset = await store.copy_page(source, target, limit=7, offset=offset)
        moved += n
        if offset is None:
            break
    assert moved == 26 and await store.count(target) == 26
    got = {p.id: p for p in await store.retrieve(target, [p.id for p in written])}
    for p in written:
        assert got[p.id].payload == p.payload
        assert np.allclose(got[p.id].vector or [], p.vector or [])
    assert await store.copy_page(name(), target, limit=5) == (0, None)  # a missing source


async def test_upsert_from_takes_batches_until_the_iterator_ends(store: VectorStore) -> None:
    c = name()
    await store.ensure_collection(c, DIM, "Dot")
    source = iter([(p.id, p.vector or [], p.payload or {}) for p in points(25)])
    sizes = []
    while n := await store.upsert_from(c, source, 10):
        sizes.append(n)
    assert sizes == [10, 10, 5] and await store.count(c) == 25

    def broken() -> Iterator[tuple[int, list[float], dict[str, object]]]:
        yield 100, [1.0] * DIM, {}
        raise ValueError("line 2: not JSON")

    with pytest.raises(ValueError, match="line 2"):
        await store.upsert_from(c, broken(), 10)


async def test_retrieve_delete_and_existing_ids(store: VectorStore) -> None:
    c = name()
    await store.ensure_collection(c, DIM, "Cosine")
    await store.upsert(c, points(10))
    got = await store.retrieve(c, [3, 99, 5], with_vectors=False)
    assert sorted(p.id for p in got) == [3, 5] and all(p.vector is None for p in got)
    assert await store.existing_ids(c, [1, 2, 50]) == {1, 2}
    assert await store.delete_points(c, [1, 2, 50]) == 2
    await store.delete_ids(c, [3, 77])
    await store.delete_ids(name(), [1])  # a missing collection is fine
    assert await store.count(c) == 7
    assert await store.existing_ids(name(), [1]) == set()


def brute_force(vectors: np.ndarray, q: np.ndarray, distance: str) -> list[int]:
    if distance == "Cosine":
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = v @ (q / np.linalg.norm(q))
        return list(np.argsort(-scores, kind="stable"))
    if distance == "Dot":
        return list(np.argsort(-(vectors @ q), kind="stable"))
    return list(np.argsort(np.linalg.norm(vectors - q, axis=1), kind="stable"))


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
async def test_query_ranks_as_brute_force(store: VectorStore, distance: str) -> None:
    c = name()
    await store.ensure_collection(c, DIM, distance)
    pts = points(200, seed=7)
    await store.upsert(c, pts)
    vectors = np.array([p.vector for p in pts], dtype=np.float32)
    rng = np.random.default_rng(11)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        found = await store.query(c, PointQuery(vector=q.tolist(), limit=10))
        assert [p.id for p in found] == brute_force(vectors, q, distance)[:10]
        scores = [p.score for p in found]
        assert scores == sorted(scores, reverse=distance != "Euclid")


async def test_query_filters_match_range_and_negation(store: VectorStore) -> None:
    c = name()
    await store.ensure_collection(c, DIM, "Cosine")
    await store.upsert(c, points(60))
    q = [1.0] * DIM

    async def ids(flt: dict[str, object], limit: int = 100) -> set[int | str]:
        found = await store.query(
            c, PointQuery.model_validate({"vector": q, "limit": limit, "filter": flt})
        )
        return {p.id for p in found}

    assert await ids({"must": [{"key": "group", "match": {"value": "b"}}]}) == set(range(1, 60, 3))
    assert await ids({"must": [{"key": "n", "range": {"gte": 10, "lt": 15}}]}) == set(range(10, 15))
    assert await ids({"must": [{"key": "group", "match": {"any": ["a", "c"]}}]}) == {
        i for i in range(60) if i % 3 != 1
    }
    assert await ids(
        {
            "must": [{"key": "even", "match": {"value": True}}],
            "must_not": [{"key": "n", "range": {"gte": 4}}],
        }
    ) == {0, 2}
    assert await ids(
        {
            "should": [
                {"key": "n", "match": {"value": 7}},
                {"must": [{"key": "n", "range": {"gt": 57}}]},
            ]
        }
    ) == {7, 58, 59}
    found = await store.query(
        c, PointQuery(vector=q, limit=3, with_payload=False, with_vectors=True)
    )
    assert len(found) == 3 and all(p.payload is None and len(p.vector or []) == DIM for p in found)
    assert await store.query(name(), PointQuery(vector=q)) == []


async def test_query_score_threshold(store: VectorStore) -> None:
    c = name()
    await store.ensure_collection(c, 2, "Dot")
    await store.upsert(c, [StoredPoint(i, [float(i), 0.0], {}) for i in range(1, 6)])
    found = await store.query(c, PointQuery(vector=[1.0, 0.0], score_threshold=2.5))
    assert [p.id for p in found] == [5, 4, 3]


# Edge only: the shard cache, the index build and crash leftovers


async def all_ids(store: VectorStore, c: str) -> set[int | str]:
    ids: set[int | str] = set()
    offset: int | str | None = None
    while True:
        page, offset = await store.scroll(c, limit=1000, offset=offset)
        ids |= {p.id for p in page}
        if offset is None:
            return ids


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[EdgeStore]:
    s = EdgeStore(tmp_path / "vectors", open_shards=3)
    yield s
    s.close()


async def test_edge_keeps_a_bounded_number_of_shards_open(edge: EdgeStore) -> None:
    names = [name() for _ in range(8)]
    for i, c in enumerate(names):
        await edge.ensure_collection(c, DIM, "Cosine")
        await edge.upsert(c, points(5, start=i * 10))
    assert len(edge._open) <= 3
    await asyncio.gather(*(edge.count(c) for c in names * 3))
    assert len(edge._open) <= 3
    for i, c in enumerate(names):
        assert [p.id for p in (await edge.scroll(c, limit=10))[0]] == list(
            range(i * 10, i * 10 + 5)
        )


async def test_edge_drop_removes_the_files(edge: EdgeStore) -> None:
    c = name()
    await edge.ensure_collection(c, DIM, "Cosine")
    await edge.upsert(c, points(5))
    assert (edge.root / c).is_dir()
    await edge.drop_collection(c)
    assert list(edge.root.iterdir()) == []


async def test_edge_index_build_keeps_writes_made_during_it(edge: EdgeStore) -> None:
    """The HNSW build runs on a copy in a child process; what is written meanwhile is
    replayed onto it before the swap: nothing written is lost, deletes included."""
    c = name()
    await edge.ensure_collection(c, DIM, "Cosine")
    await edge.upsert(c, points(3000, seed=3))
    build = asyncio.create_task(edge.build_index(c))
    written = 0
    while not build.done():
        await edge.upsert(c, points(10, seed=written, start=100_000 + written))
        await edge.delete_ids(c, [written])  # deletes of points the copy holds
        written += 10
        await asyncio.sleep(0.02)
    report = await build
    assert report.built and report.replayed > 0
    assert report.indexed >= 3000 - written // 10  # what the copy held; later writes scan
    expected = (set(range(3000)) - set(range(0, written, 10))) | set(
        range(100_000, 100_000 + written)
    )
    assert await all_ids(edge, c) == expected
    again = await edge.build_index(c)  # indexes what was replayed, with no writes this time
    assert again.built and again.replayed == 0 and again.indexed == again.points
    assert not (await edge.build_index(c)).built  # nothing left to index
    assert [p for p in edge.root.iterdir() if p.name.startswith(".")] == []


async def test_edge_recovers_an_interrupted_index_swap(tmp_path: Path) -> None:
    """A crash between marking the optimised copy ready and swapping it in: the next
    start completes the swap; scratch copies of other kinds are thrown away."""
    root = tmp_path / "vectors"
    first = EdgeStore(root)
    c = name()
    await first.ensure_collection(c, DIM, "Cosine")
    await first.upsert(c, points(20))
    await first.flush(c)
    first.close()
    shutil.copytree(root / c, tmp_path / "optimised")
    live = EdgeStore(root)  # the live shard moves on; the ready copy stands for its successor
    await live.upsert(c, points(1, start=500))
    live.close()
    (tmp_path / "optimised").rename(root / f".ready-{c}")
    (root / ".new-x-1").mkdir()
    (root / ".index-y-2").mkdir()
    store = EdgeStore(root)
    try:
        assert sorted(p.name for p in root.iterdir()) == [c]
        assert await store.count(c) == 20  # the ready copy won: it was complete
    finally:
        store.close()


class HeldBuilds:
    """Holds index builds after their child process is done, until released: the window in
    which the live shard is written, dropped or made again."""

    def __init__(self, store: EdgeStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = asyncio.Event()
        self.waiting = 0
        real = store._optimize_copy

        async def held(copy: Path) -> None:
            await real(copy)
            self.waiting += 1
            await self.release.wait()

        monkeypatch.setattr(store, "_optimize_copy", held)

    async def until_waiting(self, n: int) -> None:
        async def poll() -> None:
            while self.waiting < n:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), 60)


async def test_edge_drop_during_an_index_build_stays_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "vectors"
    store = EdgeStore(root)
    held = HeldBuilds(store, monkeypatch)
    c = name()
    await store.ensure_collection(c, DIM, "Cosine")
    await store.upsert(c, points(300))
    build = asyncio.create_task(store.build_index(c))
    await held.until_waiting(1)
    await store.drop_collection(c)
    await store.ensure_collection(c, DIM, "Cosine")  # the same name, made again
    await store.upsert(c, points(2, start=900))
    held.release.set()
    assert not (await build).built
    assert await all_ids(store, c) == {900, 901}
    store.close()
    reopened = EdgeStore(root)
    try:
        assert await all_ids(reopened, c) == {900, 901}
        assert sorted(p.name for p in root.iterdir()) == [c]
    finally:
        reopened.close()


async def test_edge_one_index_build_per_collection_at_a_time(
    edge: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldBuilds(edge, monkeypatch)
    c = name()
    await edge.ensure_collection(c, DIM, "Cosine")
    await edge.upsert(c, points(300))
    first = asyncio.create_task(edge.build_index(c))
    await held.until_waiting(1)
    await edge.upsert(c, points(1, start=600))
    second = await edge.build_index(c)  # a retry while the first still runs
    assert not second.built
    await edge.upsert(c, [StoredPoint(str(uuid.UUID(int=7)).upper(), [1.0] * DIM, {})])
    held.release.set()
    report = await first
    assert report.built and report.replayed == 2
    assert await all_ids(edge, c) == set(range(300)) | {600, str(uuid.UUID(int=7))}


async def test_edge_index_builds_leave_the_pool_to_other_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds wait for their child process on the event loop, not on one of the store's
    threads: with more builds in flight than threads, other collections still answer."""
    store = EdgeStore(tmp_path / "vectors", threads=2)
    held = HeldBuilds(store, monkeypatch)
    try:
        names = [name() for _ in range(3)]
        for c in names:
            await store.ensure_collection(c, DIM, "Cosine")
            await store.upsert(c, points(200))
        other = name()
        await store.ensure_collection(other, DIM, "Cosine")
        builds = [asyncio.create_task(store.build_index(c)) for c in names]
        await held.until_waiting(3)
        assert await asyncio.wait_for(store.count(other), 10) == 0
        held.release.set()
        assert all(r.built for r in await asyncio.gather(*builds))
    finally:
        store.close()


async def test_edge_index_build_keeps_the_collection_config(edge: EdgeStore) -> None:
    c = name()
    await edge.ensure_collection(c, DIM, "Dot")
    await edge.upsert(c, points(300))
    before = (edge.root / c / "edge_config.json").read_text()
    assert (await edge.build_index(c)).built
    assert (edge.root / c / "edge_config.json").read_text() == before


@pytest.mark.filterwarnings("ignore:Local mode performs exact")  # the server stand-in scans
async def test_query_params_exact_and_hnsw_ef(store: VectorStore) -> None:
    """``exact`` ranks like brute force whatever the index; ``hnsw_ef`` is accepted (on Edge,
    after the index is built, it widens the search)."""
    c = name()
    dim = 32
    await store.ensure_collection(c, dim, "Cosine")
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((3000, dim)).astype(np.float32)
    await store.upsert(c, [StoredPoint(i, v.tolist(), {}) for i, v in enumerate(vectors)])
    await store.build_index(c)
    hits = 0
    for _ in range(20):
        q = rng.standard_normal(dim).astype(np.float32)
        expected = brute_force(vectors, q, "Cosine")[:10]
        exact = await store.query(
            c, PointQuery.model_validate({"vector": q.tolist(), "params": {"exact": True}})
        )
        assert [p.id for p in exact] == expected
        wide = await store.query(
            c, PointQuery.model_validate({"vector": q.tolist(), "params": {"hnsw_ef": 512}})
        )
        hits += len({p.id for p in wide} & set(expected))
    assert hits / 200 >= 0.9
