"""What a merge, a split and an import give the sessions they finish: plain functions
over values, no I/O (the stores read the rows, call these, and write the results).

API.md, merge: the new session's stats are the sums of the sources', model lists
their union, tags the request's or the union of the sources', ``metadata.merged_from``
the source ids in order, ``metadata.merged_point_count`` the points in the new
collection; sources must share vector parameters. Split: each part's
``urls_processed``, ``content_analyzed`` and ``embeddings_created`` equal its point
count, it gets ``metadata.split_from``, and the source's counters go down by the
removed count, not below zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from session_service.domain.errors import Conflict
from session_service.domain.models import (
    ModelUsage,
    ProcessingStats,
    SessionRecord,
    SessionStatus,
    Storage,
)

MAX_MERGED_TAGS = 50  # a merged session keeps at most this many of its sources' tags
# A split part inherits its source's metadata (under its own) only while the two together
# stay within this many bytes of jsonb text; past it, the part keeps its own metadata.
MAX_INHERITED_METADATA_BYTES = 65536


@dataclass(frozen=True)
class Counters:
    """A session's four processing counters."""

    urls_processed: int = 0
    content_analyzed: int = 0
    clusters_generated: int = 0
    embeddings_created: int = 0


def union(lists: Iterable[Sequence[str]]) -> list[str]:
    """Every item once, in the order first seen."""
    return list(dict.fromkeys(x for lst in lists for x in lst))


# locking


def check_lockable(
    records: Sequence[SessionRecord],
    *,
    allow_deleted: bool = False,
    need_live: bool = False,
    same_vectors: bool = False,
) -> None:
    """Raise Conflict when an operation may not hold these sessions: a deleted one (unless
    allowed), an offloaded one when it needs the points, or (``same_vectors``, a merge)
    sources whose vector parameters differ."""
    for r in records:
        if r.status is SessionStatus.deleted and not allow_deleted:
            raise Conflict(f"session {r.id} is deleted; restore it first")
        if need_live and r.storage is Storage.offloaded:
            raise Conflict(f"session {r.id} was offloaded again; retry the operation")
    if same_vectors:
        params = {(r.configuration.vector_size, r.configuration.distance) for r in records}
        if len(params) > 1:
            raise Conflict(
                "sources have different vector parameters (vector_size, distance): "
                + ", ".join(
                    f"{r.id}={r.configuration.vector_size}/{r.configuration.distance.value}"
                    for r in records
                )
            )


# merge


def merged_stats(sources: Sequence[ProcessingStats]) -> ProcessingStats:
    """The sums of the sources' counters; the latest processing time among them."""
    times = [s.last_processing_time for s in sources if s.last_processing_time]
    return ProcessingStats(
        urls_processed=sum(s.urls_processed for s in sources),
        content_analyzed=sum(s.content_analyzed for s in sources),
        clusters_generated=sum(s.clusters_generated for s in sources),
        embeddings_created=sum(s.embeddings_created for s in sources),
        last_processing_time=max(times, default=None),
    )


def merged_usage(sources: Sequence[ModelUsage]) -> ModelUsage:
    """The union of the model lists (first seen first), the sum of the switches, the
    latest switch."""
    switches = [u.last_model_switch for u in sources if u.last_model_switch]
    return ModelUsage(
        llm_models_used=union(u.llm_models_used for u in sources),
        embedding_models_used=union(u.embedding_models_used for u in sources),
        model_switches=sum(u.model_switches for u in sources),
        last_model_switch=max(switches, default=None),
    )


def merged_tags(requested: Sequence[str] | None, sources: Sequence[Sequence[str]]) -> list[str]:
    """The request's tags as given; without them, the sources' union, capped."""
    if requested is not None:
        return list(requested)
    return union(sources)[:MAX_MERGED_TAGS]


def merged_metadata(
    first_source: Mapping[str, Any],
    target: Mapping[str, Any],
    source_ids: Sequence[str],
    *,
    point_count: int,
    collisions: int,
) -> dict[str, Any]:
    """The first source's metadata under the merged session's own (the request's), then
    where it came from: source ids in order, its point count, the id collisions."""
    return {
        **first_source,
        **target,
        "merged_from": list(source_ids),
        "merged_point_count": point_count,
        "merge_collisions": collisions,
    }


# split


def split_part_counters(points: int, part: Counters) -> Counters:
    """A part's counters: its point count for urls, content and embeddings."""
    return Counters(
        urls_processed=points,
        content_analyzed=points,
        clusters_generated=part.clusters_generated,
        embeddings_created=points,
    )


def split_source_counters(source: Counters, removed_points: int) -> Counters:
    """The source's counters once ``removed_points`` left it, none below zero."""
    return Counters(
        urls_processed=max(source.urls_processed - removed_points, 0),
        content_analyzed=max(source.content_analyzed - removed_points, 0),
        clusters_generated=source.clusters_generated,
        embeddings_created=max(source.embeddings_created - removed_points, 0),
    )


def split_part_metadata(
    source: Mapping[str, Any],
    part: Mapping[str, Any],
    source_id: str,
    *,
    inherited_bytes: int,
) -> dict[str, Any]:
    """The source's metadata under the part's own when both fit together
    (``inherited_bytes``: the size of that union as stored), else the part's own; then
    ``split_from``."""
    base = {**source, **part} if inherited_bytes <= MAX_INHERITED_METADATA_BYTES else dict(part)
    return {**base, "split_from": source_id}


def split_part_tags(part: Sequence[str], source: Sequence[str]) -> list[str]:
    """A part keeps the tags it was given; one given none gets the source's."""
    return list(part) if part else list(source)


# import


def imported_counters(stats: Mapping[str, Any]) -> Counters:
    """The original's counters as its export recorded them (missing ones are zero)."""
    return Counters(
        urls_processed=int(stats.get("urls_processed") or 0),
        content_analyzed=int(stats.get("content_analyzed") or 0),
        clusters_generated=int(stats.get("clusters_generated") or 0),
        embeddings_created=int(stats.get("embeddings_created") or 0),
    )


def imported_usage(usage: Mapping[str, Any]) -> ModelUsage:
    """The original's model history as its export recorded it (no switch time: the
    imported session keeps its own)."""
    return ModelUsage(
        llm_models_used=[str(m) for m in usage.get("llm_models_used") or []],
        embedding_models_used=[str(m) for m in usage.get("embedding_models_used") or []],
        model_switches=int(usage.get("model_switches") or 0),
    )
