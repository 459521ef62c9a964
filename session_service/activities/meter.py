"""Counting moved points from inside activities, through the SDK's metric meter."""

from __future__ import annotations

from temporalio import activity

from session_service.metrics import POINTS_MOVED


def points_moved(count: int) -> None:
    if count:
        activity.metric_meter().create_counter(
            POINTS_MOVED, "Points copied, imported, exported or removed by operations"
        ).add(count, {"step": activity.info().activity_type})
