"""Names of the metrics recorded through the Temporal SDK's meter, in workflows and
activities. No imports: workflow code reads them in the sandbox, where the metrics
library (``session_service.obs.metrics``) must not be loaded."""

from __future__ import annotations

OPERATIONS_FINISHED = "session_service_operations_finished"
OPERATION_DURATION = "session_service_operation_duration_seconds"
POINTS_MOVED = "session_service_points_moved"
POINTS_REMOVED = "session_service_points_removed"
INDEX_BUILD = "session_service_index_build_seconds"

__all__ = [
    "INDEX_BUILD",
    "OPERATIONS_FINISHED",
    "OPERATION_DURATION",
    "POINTS_MOVED",
    "POINTS_REMOVED",
]
