"""The merge, split and import rules as plain functions (API.md, merge and split
semantics): no database, no workflow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from session_service.domain import session_rules as rules
from session_service.domain.errors import Conflict
from session_service.domain.models import (
    Distance,
    ModelUsage,
    ProcessingStats,
    SessionConfiguration,
    SessionRecord,
    SessionStatus,
    Storage,
)

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 1, tzinfo=UTC)


def session(
    sid: str,
    *,
    status: SessionStatus = SessionStatus.active,
    storage: Storage = Storage.live,
    vector_size: int = 384,
    distance: Distance = Distance.cosine,
) -> SessionRecord:
    return SessionRecord(
        id=sid,
        name=sid,
        status=status,
        created_at=T1,
        updated_at=T1,
        qdrant_collection_name=f"c_{sid}",
        configuration=SessionConfiguration(vector_size=vector_size, distance=distance),
        processing_stats=ProcessingStats(),
        model_usage_history=ModelUsage(),
        storage=storage,
    )


# merge


def test_merged_stats_are_the_sums_with_the_latest_time() -> None:
    merged = rules.merged_stats(
        [
            ProcessingStats(
                urls_processed=1,
                content_analyzed=2,
                clusters_generated=3,
                embeddings_created=4,
                last_processing_time=T1,
            ),
            ProcessingStats(urls_processed=10, content_analyzed=20, embeddings_created=40),
            ProcessingStats(clusters_generated=30, last_processing_time=T2),
        ]
    )
    assert merged == ProcessingStats(
        urls_processed=11,
        content_analyzed=22,
        clusters_generated=33,
        embeddings_created=44,
        last_processing_time=T2,
    )


def test_merged_stats_of_untouched_sources_have_no_time() -> None:
    assert rules.merged_stats([ProcessingStats(), ProcessingStats()]) == ProcessingStats()


def test_merged_usage_unions_the_models_in_order_and_sums_the_switches() -> None:
    merged = rules.merged_usage(
        [
            ModelUsage(llm_models_used=["gpt", "claude"], model_switches=2, last_model_switch=T2),
            ModelUsage(
                llm_models_used=["claude", "llama"],
                embedding_models_used=["e5"],
                model_switches=3,
                last_model_switch=T1,
            ),
            ModelUsage(embedding_models_used=["bge", "e5"]),
        ]
    )
    assert merged == ModelUsage(
        llm_models_used=["gpt", "claude", "llama"],
        embedding_models_used=["e5", "bge"],
        model_switches=5,
        last_model_switch=T2,
    )


def test_merged_tags_are_the_requests_or_the_union_of_the_sources() -> None:
    sources = [["x", "y"], ["y", "z"], ["x"]]
    assert rules.merged_tags(None, sources) == ["x", "y", "z"]
    assert rules.merged_tags(["t"], sources) == ["t"]
    assert rules.merged_tags([], sources) == []  # asked for none: none


def test_merged_tags_from_the_sources_are_capped() -> None:
    sources = [[f"a{i}" for i in range(30)], [f"b{i}" for i in range(30)]]
    merged = rules.merged_tags(None, sources)
    assert len(merged) == rules.MAX_MERGED_TAGS == 50
    assert merged[:30] == sources[0] and merged[30:] == sources[1][:20]
    # the request's own tags are not capped here (the request's validation bounds them)
    assert len(rules.merged_tags([f"t{i}" for i in range(60)], sources)) == 60


def test_merged_metadata_is_the_first_sources_under_the_requests_then_the_provenance() -> None:
    meta = rules.merged_metadata(
        {"team": "a", "topic": "first", "merged_from": ["old"]},
        {"topic": "request"},
        ["s1", "s2", "s3"],
        point_count=60,
        collisions=15,
    )
    assert meta == {
        "team": "a",
        "topic": "request",
        "merged_from": ["s1", "s2", "s3"],
        "merged_point_count": 60,
        "merge_collisions": 15,
    }


def test_lockable_refuses_mixed_vector_parameters_for_a_merge() -> None:
    same = [session("a"), session("b")]
    rules.check_lockable(same, same_vectors=True)
    mixed = [session("a"), session("b", vector_size=8)]
    rules.check_lockable(mixed)  # only a merge asks
    with pytest.raises(Conflict, match="different vector parameters.*a=384/Cosine, b=8/Cosine"):
        rules.check_lockable(mixed, same_vectors=True)
    with pytest.raises(Conflict):
        rules.check_lockable([session("a"), session("b", distance=Distance.dot)], same_vectors=True)


def test_lockable_refuses_deleted_and_offloaded_sessions_unless_allowed() -> None:
    deleted = [session("a", status=SessionStatus.deleted)]
    with pytest.raises(Conflict, match="is deleted; restore it first"):
        rules.check_lockable(deleted)
    rules.check_lockable(deleted, allow_deleted=True)
    cold = [session("a", storage=Storage.offloaded)]
    rules.check_lockable(cold)
    with pytest.raises(Conflict, match="offloaded again"):
        rules.check_lockable(cold, need_live=True)


# split


def test_a_split_part_counts_its_points() -> None:
    part = rules.split_part_counters(7, rules.Counters(clusters_generated=2))
    assert part == rules.Counters(
        urls_processed=7, content_analyzed=7, clusters_generated=2, embeddings_created=7
    )


def test_the_split_source_goes_down_by_the_removed_count_not_below_zero() -> None:
    source = rules.Counters(
        urls_processed=10, content_analyzed=3, clusters_generated=4, embeddings_created=5
    )
    assert rules.split_source_counters(source, 5) == rules.Counters(
        urls_processed=5, content_analyzed=0, clusters_generated=4, embeddings_created=0
    )
    assert rules.split_source_counters(source, 0) == source
    assert rules.split_source_counters(source, 11) == rules.Counters(clusters_generated=4)


def test_a_split_part_inherits_the_sources_metadata_under_its_own_when_it_fits() -> None:
    src, own = {"team": "a", "topic": "src"}, {"topic": "part"}
    limit = rules.MAX_INHERITED_METADATA_BYTES
    fits = rules.split_part_metadata(src, own, "s1", inherited_bytes=limit)
    assert fits == {"team": "a", "topic": "part", "split_from": "s1"}
    too_big = rules.split_part_metadata(src, own, "s1", inherited_bytes=limit + 1)
    assert too_big == {"topic": "part", "split_from": "s1"}
    assert own == {"topic": "part"}  # not changed in place


def test_a_split_part_keeps_its_tags_or_gets_the_sources() -> None:
    assert rules.split_part_tags(["one"], ["x", "y"]) == ["one"]
    assert rules.split_part_tags([], ["x", "y"]) == ["x", "y"]


# import


def test_an_import_carries_the_originals_counters_and_models() -> None:
    counters = rules.imported_counters(
        {"urls_processed": 4, "content_analyzed": None, "embeddings_created": "9"}
    )
    assert counters == rules.Counters(urls_processed=4, embeddings_created=9)
    usage = rules.imported_usage({"llm_models_used": ["gpt"], "model_switches": 3})
    assert usage == ModelUsage(llm_models_used=["gpt"], model_switches=3)
    assert rules.imported_usage({}) == ModelUsage()
