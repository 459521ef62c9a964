"""The server backend: every qdrant-client call of the service.

qdrant-client is synchronous, so its calls run on a small executor and the event
loop stays free while points move. Against ``QDRANT_URL`` this talks to a Qdrant
server; with ``:memory:`` (tests) or a folder (reading an older data dir for
migration) it is qdrant-client's local mode, whose storage is not thread-safe:
one thread then.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models

from session_service.domain.point_query import (
    FieldCondition,
    PointQuery,
    QueryFilter,
    ScoredPointOut,
)
from session_service.stores.vector_store import (
    CollectionParams,
    IndexReport,
    PointId,
    PointRows,
    PointTuple,
    StoredPoint,
    VectorStore,
    point_id,
    point_rows,
)

T = TypeVar("T")

_DISTANCES = {
    "Cosine": models.Distance.COSINE,
    "Dot": models.Distance.DOT,
    "Euclid": models.Distance.EUCLID,
    "Manhattan": models.Distance.MANHATTAN,
}


def _stored(record: models.Record) -> StoredPoint:
    vector = record.vector
    return StoredPoint(
        id=point_id(record.id),
        vector=list(vector) if isinstance(vector, list) else None,  # type: ignore[arg-type]
        payload=record.payload,
    )


def _condition(c: FieldCondition | QueryFilter) -> models.Condition:
    if isinstance(c, QueryFilter):
        return _filter(c)
    if c.range is not None:
        r = c.range
        return models.FieldCondition(
            key=c.key, range=models.Range(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
        )
    assert c.match is not None
    if c.match.any is not None:
        return models.FieldCondition(key=c.key, match=models.MatchAny(any=c.match.any))
    return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.match.value))


def _filter(f: QueryFilter) -> models.Filter:
    return models.Filter(**{name: [_condition(c) for c in conds] for name, conds in f.clauses()})


class QdrantServerStore(VectorStore):
    backend = "server"

    def __init__(self, client: QdrantClient, *, local: bool) -> None:
        self.client = client
        self.local = local
        self._executor = ThreadPoolExecutor(
            max_workers=1 if local else 8, thread_name_prefix="qdrant"
        )

    @classmethod
    def connect(cls, url: str, *, api_key: str | None = None) -> QdrantServerStore:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=60), local=False)

    @classmethod
    def in_memory(cls) -> QdrantServerStore:
        """qdrant-client's local mode: the tests' in-process stand-in for a server."""
        return cls(QdrantClient(location=":memory:"), local=True)

    @classmethod
    def local_folder(cls, path: Path) -> QdrantServerStore:
        """An older data dir's local-mode folder, opened to migrate it (loads it all)."""
        return cls(QdrantClient(path=str(path)), local=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.client.close()

    # collections

    async def ensure_collection(self, name: str, vector_size: int, distance: str) -> None:
        """Create the collection if missing (idempotent: safe to retry)."""

        def create() -> None:
            if self.client.collection_exists(name):
                return
            self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=vector_size, distance=_DISTANCES[distance]),
            )

        await self._run(create)

    async def drop_collection(self, name: str) -> None:
        """Delete the collection if present (idempotent)."""

        def drop() -> None:
            if self.client.collection_exists(name):
                self.client.delete_collection(name)

        await self._run(drop)

    async def collection_params(self, name: str) -> CollectionParams | None:
        def info() -> CollectionParams | None:
            if not self.client.collection_exists(name):
                return None
            desc = self.client.get_collection(name)
            params = desc.config.params.vectors
            assert isinstance(params, models.VectorParams)
            count = self.client.count(name, exact=True).count
            return CollectionParams(
                vector_size=params.size, distance=params.distance.value, points_count=count
            )

        return await self._run(info)

    async def exists(self, name: str) -> bool:
        """Cheap, unlike ``collection_params`` (whose exact count reads every point)."""
        return await self._run(self.client.collection_exists, name)

    async def collection_names(self) -> set[str]:
        def names() -> set[str]:
            return {c.name for c in self.client.get_collections().collections}

        return await self._run(names)

    async def count(self, name: str) -> int:
        def count() -> int:
            if not self.client.collection_exists(name):
                return 0
            return self.client.count(name, exact=True).count

        return await self._run(count)

    # points

    async def upsert(self, name: str, points: Sequence[StoredPoint]) -> int:
        structs = [
            models.PointStruct(id=p.id, vector=p.vector or [], payload=p.payload or {})
            for p in points
        ]
        await self._run(self.client.upsert, name, structs, wait=True)
        return len(structs)

    async def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: PointId | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], PointId | None]:
        records, next_offset = await self._run(
            self.client.scroll,
            name,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [_stored(r) for r in records], next_offset  # type: ignore[return-value]

    async def scroll_rows(
        self, name: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[PointRows, PointId | None]:
        """``scroll`` with vectors, as a :class:`PointRows` built on the Qdrant thread."""

        def page() -> tuple[PointRows, PointId | None]:
            records, next_offset = self.client.scroll(
                name, limit=limit, offset=offset, with_payload=True, with_vectors=True
            )
            return point_rows(records), next_offset  # type: ignore[return-value]

        return await self._run(page)

    async def copy_page(
        self, source: str, target: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[int, PointId | None]:
        def copy() -> tuple[int, PointId | None]:
            if not self.client.collection_exists(source):
                return 0, None
            records, nxt = self.client.scroll(
                source, limit=limit, offset=offset, with_payload=True, with_vectors=True
            )
            if records:
                structs = [
                    models.PointStruct(id=r.id, vector=r.vector or [], payload=r.payload or {})
                    for r in records
                ]
                self.client.upsert(target, structs, wait=True)
            return len(records), None if nxt is None else point_id(nxt)

        return await self._run(copy)

    async def upsert_from(self, name: str, points: Iterator[PointTuple], limit: int) -> int:
        def take() -> int:
            structs = [
                models.PointStruct(id=i, vector=v, payload=p or {})
                for i, v, p in itertools.islice(points, limit)
            ]
            if structs:
                self.client.upsert(name, structs, wait=True)
            return len(structs)

        return await self._run(take)

    async def delete_points(self, name: str, ids: Sequence[PointId]) -> int:
        """Delete the points that exist; return how many did."""

        def delete() -> int:
            found = self.client.retrieve(name, ids=list(ids), with_payload=False)
            if found:
                self.client.delete(
                    name, points_selector=models.PointIdsList(points=[r.id for r in found])
                )
            return len(found)

        return await self._run(delete)

    async def retrieve(
        self, name: str, ids: Sequence[PointId], *, with_vectors: bool = True
    ) -> list[StoredPoint]:
        """The points of ``ids`` that exist, with payloads (and vectors)."""
        records = await self._run(
            self.client.retrieve, name, ids=list(ids), with_payload=True, with_vectors=with_vectors
        )
        return [_stored(r) for r in records]

    async def existing_ids(self, name: str, ids: Sequence[PointId]) -> set[PointId]:
        def find() -> set[PointId]:
            if not self.client.collection_exists(name):
                return set()
            found = self.client.retrieve(name, ids=list(ids), with_payload=False)
            return {point_id(r.id) for r in found}

        return await self._run(find)

    async def delete_ids(self, name: str, ids: Sequence[PointId]) -> None:
        """Delete ``ids`` from ``name`` (absent ids and collections are fine)."""

        def delete() -> None:
            if ids and self.client.collection_exists(name):
                self.client.delete(name, points_selector=models.PointIdsList(points=list(ids)))

        await self._run(delete)

    async def query(self, name: str, query: PointQuery) -> list[ScoredPointOut]:
        def search() -> list[ScoredPointOut]:
            if not self.client.collection_exists(name):
                return []
            found = self.client.query_points(
                name,
                query=[float(v) for v in query.vector],
                query_filter=_filter(query.filter) if query.filter else None,
                limit=query.limit,
                score_threshold=query.score_threshold,
                with_payload=query.with_payload,
                with_vectors=query.with_vectors,
                search_params=(
                    models.SearchParams(hnsw_ef=query.params.hnsw_ef, exact=query.params.exact)
                    if query.params
                    else None
                ),
            ).points
            return [
                ScoredPointOut(
                    id=point_id(p.id),
                    score=p.score,
                    payload=p.payload if query.with_payload else None,
                    vector=list(p.vector) if query.with_vectors else None,  # type: ignore[arg-type]
                )
                for p in found
            ]

        return await self._run(search)

    async def flush(self, name: str) -> None:
        """A server acknowledges upserts (``wait=True``) once they are in its WAL."""

    async def build_index(self, name: str) -> IndexReport:
        """A server builds its indexes itself, in the background."""
        return IndexReport(built=False, points=0, indexed=0, seconds=0.0)

    async def ping(self) -> None:
        await self._run(self.client.get_collections)
