"""One-time move of an older data dir's vectors from qdrant-client local mode into Edge.

Earlier releases kept the embedded vectors in ``<data-dir>/qdrant`` (qdrant-client
local mode: SQLite, loaded whole into RAM). At start, when that folder exists,
each collection is copied into an Edge shard of the same name and its count
checked; then the folder is renamed ``qdrant.migrated`` (kept, not deleted, until
the operator removes it). A collection already in Edge with the same count is
skipped, so a start interrupted half-way resumes. Any failure stops the start
with :class:`MigrationError`, whose message says what to do: nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

from session_service.obs.logs import get as get_logger
from session_service.stores.vector_store import StoredPoint, VectorStore

log = get_logger(__name__)
BATCH = 1024


class MigrationError(RuntimeError):
    pass


async def _copy(source: VectorStore, target: VectorStore, name: str) -> int:
    params = await source.collection_params(name)
    assert params is not None
    have = await target.collection_params(name)
    if have is not None and have.points_count == params.points_count:
        return params.points_count
    if have is not None:
        await target.drop_collection(name)  # a partial copy from an interrupted start
    await target.ensure_collection(name, params.vector_size, params.distance)
    offset = None
    while True:
        points, offset = await source.scroll(name, limit=BATCH, offset=offset, with_vectors=True)
        if points:
            await target.upsert(
                name, [StoredPoint(id=p.id, vector=p.vector, payload=p.payload) for p in points]
            )
        if offset is None:
            break
    await target.flush(name)
    copied = await target.count(name)
    if copied != params.points_count:
        raise MigrationError(
            f"collection {name}: {params.points_count} points in local mode, "
            f"{copied} in Edge after copying"
        )
    return copied


async def _migrate(folder: Path, target: VectorStore) -> None:
    from session_service.stores.qdrant_server import QdrantServerStore

    source = QdrantServerStore.local_folder(folder)
    try:
        names = sorted(await source.collection_names())
        for name in names:
            count = await _copy(source, target, name)
            log.info("vectors migrated from local mode", collection=name, points=count)
    finally:
        source.close()


async def migrate_local_mode(folder: Path, target: VectorStore) -> bool:
    """Migrate ``folder`` (when it exists) into ``target``; True when something was."""
    if not folder.is_dir():
        return False
    log.info("migrating local-mode vectors into Edge", folder=str(folder))
    try:
        await _migrate(folder, target)
    except Exception as exc:
        raise MigrationError(
            f"could not migrate the local-mode vectors in {folder} into Edge shards "
            f"({type(exc).__name__}: {exc}). Nothing was deleted. Fix the cause and start "
            f"again (a restart resumes), or move {folder} away to start without those "
            f"vectors."
        ) from exc
    done = folder.with_name(folder.name + ".migrated")
    n = 1
    while done.exists():
        n += 1
        done = folder.with_name(f"{folder.name}.migrated-{n}")
    folder.rename(done)
    log.info("local-mode folder kept as a backup; delete it when satisfied", folder=str(done))
    return True
