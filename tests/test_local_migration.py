"""A data dir written by an older release (qdrant-client local mode under ``qdrant/``) is
moved into Edge shards once, at start, and nothing is lost when that fails."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from session_service.settings import Settings
from session_service.stores.edge_store import EdgeStore
from session_service.stores.local_migration import MigrationError
from session_service.stores.vector_store import StoredPoint, open_vector_store


def old_data_dir(root: Path, sizes: dict[str, int]) -> dict[str, list[models.PointStruct]]:
    client = QdrantClient(path=str(root / "qdrant"))
    written: dict[str, list[models.PointStruct]] = {}
    for name, n in sizes.items():
        client.create_collection(
            name, vectors_config=models.VectorParams(size=3, distance=models.Distance.EUCLID)
        )
        pts = [
            models.PointStruct(
                id=i if i % 2 else str(uuid.UUID(int=i + 1)),
                vector=[float(i), 0.5, -1.0],
                payload={"i": i},
            )
            for i in range(n)
        ]
        if pts:
            client.upsert(name, pts)
        written[name] = pts
    client.close()
    return written


async def test_local_mode_vectors_move_into_edge_once(tmp_path: Path) -> None:
    written = old_data_dir(tmp_path, {"session_" + "a" * 32: 1500, "session_" + "b" * 32: 0})
    store = await open_vector_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(store, EdgeStore)
        assert await store.collection_names() == set(written)
        for name, pts in written.items():
            params = await store.collection_params(name)
            assert params is not None
            assert (params.vector_size, params.distance) == (3, "Euclid")
            assert params.points_count == len(pts)
            if pts:
                got = {p.id: p for p in await store.retrieve(name, [p.id for p in pts[:50]])}
                for p in pts[:50]:
                    assert got[p.id].vector == p.vector and got[p.id].payload == p.payload
    finally:
        store.close()
    assert not (tmp_path / "qdrant").exists()
    assert (tmp_path / "qdrant.migrated").is_dir()  # kept as a backup
    again = await open_vector_store(Settings(data_dir=tmp_path))  # nothing to do any more
    try:
        assert await again.count("session_" + "a" * 32) == 1500
    finally:
        again.close()


async def test_an_interrupted_migration_resumes(tmp_path: Path) -> None:
    """A partial copy left by a start that died half-way is redone, not trusted."""
    name = "session_" + "c" * 32
    old_data_dir(tmp_path, {name: 300})
    partial = EdgeStore(tmp_path / "vectors")
    await partial.ensure_collection(name, 3, "Euclid")
    await partial.upsert(name, [StoredPoint(1, [9.0, 9.0, 9.0], {"stale": True})])
    partial.close()
    store = await open_vector_store(Settings(data_dir=tmp_path))
    try:
        assert await store.count(name) == 300
        (p,) = await store.retrieve(name, [1])
        assert p.payload == {"i": 1}
    finally:
        store.close()


async def test_a_failed_migration_refuses_to_start_and_keeps_the_folder(tmp_path: Path) -> None:
    old_data_dir(tmp_path, {"session_" + "d" * 32: 10})
    storage = tmp_path / "qdrant" / "collection" / ("session_" + "d" * 32) / "storage.sqlite"
    storage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MigrationError) as failed:
        await open_vector_store(Settings(data_dir=tmp_path))
    message = str(failed.value)
    assert str(tmp_path / "qdrant") in message
    assert "Nothing was deleted" in message and "move" in message
    assert storage.exists() and not (tmp_path / "qdrant.migrated").exists()
