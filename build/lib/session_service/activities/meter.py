"""Counting moved points from inside activities, through the SDK's metric meter."""

from __future__ import annotations

from temporalio import activity

from session_service.metrics import INDEX_BUILD, POINTS_MOVED


def points_moved(count: int) -> None:
    if count:
        activity.metric_meter().create_counter(
            POINTS_MOVED, "Points copied, imported, exported or removed by operations"
        ).add(count, {"step": activity.info().activity_type})


def index_built(seconds: float) -> None:
    activity.metric_meter().create_histogram_float(
        INDEX_BUILD, "Time to build a collection's search index after a bulk write", "s"
    ).record(seconds)
