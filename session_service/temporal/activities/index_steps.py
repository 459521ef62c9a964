"""Building a collection's search index: the follow-up of bulk writes, never part of them."""

from __future__ import annotations

from session_service.obs import logs
from session_service.stores.vector_store import VectorStore
from session_service.temporal import steps
from session_service.temporal.activities.meter import index_built
from session_service.temporal.contracts import IndexOutcome
from session_service.temporal.steps import implements

log = logs.get(__name__)


class IndexSteps:
    def __init__(self, vectors: VectorStore, min_points: int) -> None:
        self.vectors = vectors
        self.min_points = min_points

    @implements(steps.BUILD_INDEX)
    async def build_index(self, collection: str) -> IndexOutcome:
        """Small collections are left to scans (fast enough, and an index costs memory);
        a retry after a crash builds again from the live shard."""
        points = await self.vectors.count(collection)
        if points < self.min_points:
            return IndexOutcome(collection=collection, built=False, points=points)
        report = await self.vectors.build_index(collection)
        if report.built:
            index_built(report.seconds)
            log.info(
                "search index built",
                collection=collection,
                points=report.points,
                indexed=report.indexed,
                seconds=round(report.seconds, 2),
                replayed=report.replayed,
            )
        return IndexOutcome(
            collection=collection,
            built=report.built,
            points=report.points or points,
            indexed=report.indexed,
            seconds=report.seconds,
            replayed=report.replayed,
        )
