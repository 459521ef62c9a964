"""One module per operation. Deterministic orchestration only: no I/O, no clocks, no random."""

from session_service.workflows.delete import DeleteWorkflow
from session_service.workflows.merge import MergeWorkflow
from session_service.workflows.retention import RetentionWorkflow
from session_service.workflows.split import SplitWorkflow

ALL_WORKFLOWS: list[type] = [MergeWorkflow, SplitWorkflow, DeleteWorkflow, RetentionWorkflow]

__all__ = [
    "ALL_WORKFLOWS",
    "DeleteWorkflow",
    "MergeWorkflow",
    "RetentionWorkflow",
    "SplitWorkflow",
]
