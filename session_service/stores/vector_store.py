"""The vector store the service talks to, whichever engine holds the vectors.

Two backends implement it: Qdrant Edge in-process (``edge_store``, the embedded
default and the single-node mode) and a Qdrant server through qdrant-client
(``qdrant_server``). Everything above this module sees only :class:`VectorStore`,
so merge, split, export, import and the points API run unchanged on either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from session_service.domain.errors import StartupError
from session_service.domain.naming import collection_name_for

if TYPE_CHECKING:
    from session_service.domain.point_query import PointQuery, ScoredPointOut
    from session_service.settings import Settings

PointId = int | str
PointTuple = tuple[PointId, list[float], dict[str, Any]]  # id, vector, payload


@dataclass(frozen=True)
class StoredPoint:
    id: PointId
    vector: list[float] | None
    payload: dict[str, Any] | None


@dataclass(frozen=True)
class PointRows:
    """A scrolled page with its vectors as one float32 matrix (what Qdrant stores): an
    export writes them from it, and the page's Python floats are freed on the spot."""

    ids: list[PointId]
    vectors: Any  # np.ndarray (n, size) of float32; a list when vectors differ in shape
    payloads: list[dict[str, Any] | None]


@dataclass(frozen=True)
class CollectionParams:
    vector_size: int
    distance: str
    points_count: int


@dataclass(frozen=True)
class IndexReport:
    """What building a collection's search index did (``built`` False: nothing to do)."""

    built: bool
    points: int
    indexed: int
    seconds: float
    replayed: int = 0  # writes that arrived while the index was built, applied after


def point_rows(records: Sequence[Any]) -> PointRows:
    """A page of engine records (``id``, ``vector``, ``payload``) as :class:`PointRows`."""
    import numpy as np  # here, not at the top: workflows import this module

    vectors: Any = [r.vector for r in records]
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim == 2:
            vectors = matrix
    except (TypeError, ValueError):  # a point without a vector, or named vectors
        pass
    return PointRows(
        ids=[point_id(r.id) for r in records],
        vectors=vectors,
        payloads=[r.payload if r.payload is not None else {} for r in records],
    )


def point_id(value: Any) -> PointId:
    """Ids as the API shows them: integers, or UUIDs as strings."""
    return value if isinstance(value, int) else str(value)


class VectorStore(ABC):
    """One collection per session; every method is safe to retry (idempotent) and runs
    its engine calls off the event loop."""

    backend: str

    # collections

    @abstractmethod
    async def ensure_collection(self, name: str, vector_size: int, distance: str) -> None:
        """Create the collection if missing."""

    @abstractmethod
    async def drop_collection(self, name: str) -> None:
        """Delete the collection if present."""

    @abstractmethod
    async def collection_params(self, name: str) -> CollectionParams | None:
        """Vector parameters and exact point count, or None when there is no collection."""

    @abstractmethod
    async def exists(self, name: str) -> bool: ...

    @abstractmethod
    async def collection_names(self) -> set[str]: ...

    @abstractmethod
    async def count(self, name: str) -> int:
        """Exact count; 0 for a missing collection."""

    # points

    @abstractmethod
    async def upsert(self, name: str, points: Sequence[StoredPoint]) -> int: ...

    @abstractmethod
    async def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: PointId | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], PointId | None]:
        """A page in id order and the offset of the next one (None at the end)."""

    @abstractmethod
    async def scroll_rows(
        self, name: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[PointRows, PointId | None]:
        """``scroll`` with vectors, as a :class:`PointRows` built off the event loop."""

    @abstractmethod
    async def copy_page(
        self, source: str, target: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[int, PointId | None]:
        """Scroll a page of ``source`` from ``offset`` and upsert it into ``target`` in one
        call off the event loop, the engine's records turned into its points directly (a
        merge's copy loop): how many points, and the next offset (None at the end)."""

    @abstractmethod
    async def upsert_from(self, name: str, points: Iterator[PointTuple], limit: int) -> int:
        """Take up to ``limit`` points from ``points`` and upsert them, reading and writing
        in one call off the event loop (an import's loop: parsing a line and building the
        engine's point both hold the GIL, so a second thread would only contend for it).
        Returns how many; 0 when ``points`` is exhausted. What ``points`` raises passes."""

    @abstractmethod
    async def delete_points(self, name: str, ids: Sequence[PointId]) -> int:
        """Delete the points that exist; return how many did."""

    @abstractmethod
    async def retrieve(
        self, name: str, ids: Sequence[PointId], *, with_vectors: bool = True
    ) -> list[StoredPoint]:
        """The points of ``ids`` that exist, with payloads (and vectors)."""

    @abstractmethod
    async def existing_ids(self, name: str, ids: Sequence[PointId]) -> set[PointId]: ...

    @abstractmethod
    async def delete_ids(self, name: str, ids: Sequence[PointId]) -> None:
        """Delete ``ids`` from ``name`` (absent ids and collections are fine)."""

    @abstractmethod
    async def query(self, name: str, query: PointQuery) -> list[ScoredPointOut]:
        """Nearest points to ``query.vector``, best first, filtered (API.md section C)."""

    # durability and maintenance

    @abstractmethod
    async def flush(self, name: str) -> None:
        """Make what was written to ``name`` durable on disk (a no-op where the engine
        already is: a server, or a collection that is missing)."""

    @abstractmethod
    async def build_index(self, name: str) -> IndexReport:
        """Build the collection's search index, without holding its reads or writes."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


async def open_vector_store(settings: Settings) -> VectorStore:
    """The server backend when ``QDRANT_URL`` (or host/port) is set, else Edge shards
    under ``<data-dir>/vectors`` (migrating an older local-mode folder first)."""
    url = settings.effective_qdrant_url
    if url:
        from session_service.stores.qdrant_server import QdrantServerStore

        server = QdrantServerStore.connect(url, api_key=settings.qdrant_api_key)
        try:
            await server.ping()
        except Exception as exc:  # noqa: BLE001 - any failure: this process can't work
            server.close()
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise StartupError(
                f"cannot reach Qdrant at {url}: {reason} (check QDRANT_URL and QDRANT_API_KEY)"
            ) from None
        return server
    from session_service.stores.edge_store import EdgeStore
    from session_service.stores.local_migration import migrate_local_mode

    store = EdgeStore(settings.vector_dir, open_shards=settings.vector_open_shards)
    try:
        await migrate_local_mode(settings.qdrant_path, store)
    except BaseException:
        store.close()
        raise
    return store


__all__ = [
    "CollectionParams",
    "IndexReport",
    "PointId",
    "PointRows",
    "PointTuple",
    "StoredPoint",
    "VectorStore",
    "collection_name_for",
    "open_vector_store",
    "point_id",
    "point_rows",
]
