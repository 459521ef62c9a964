"""Counting moved points from inside activities, through the SDK's metric meter."""

from __future__ import annotations

from temporalio import activity

from session_service.obs.metrics import INDEX_BUILD, POINTS_MOVED, POINTS_REMOVED


def points_moved(count: int) -> None:
    """Points written to a collection or a file (the SDK labels them by ``activity_type``)."""
    if count:
        activity.metric_meter().create_counter(
            POINTS_MOVED, "Points copied, imported or exported by operations"
        ).add(count)


def points_removed(count: int) -> None:
    """Points deleted from a source after their copy landed: counted apart, so a moved
    point is not counted twice (once copied, once removed)."""
    if count:
        activity.metric_meter().create_counter(
            POINTS_REMOVED, "Points removed from their source by operations, once copied"
        ).add(count)


def index_built(seconds: float) -> None:
    activity.metric_meter().create_histogram_float(
        INDEX_BUILD, "Time to build a collection's search index after a bulk write", "s"
    ).record(seconds)
