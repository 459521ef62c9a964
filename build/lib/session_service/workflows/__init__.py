"""One module per operation. Deterministic orchestration only: no I/O, no clocks, no random."""

from session_service.workflows.delete import DeleteWorkflow
from session_service.workflows.export import ExportWorkflow
from session_service.workflows.importing import ImportWorkflow
from session_service.workflows.index import IndexWorkflow
from session_service.workflows.merge import MergeWorkflow
from session_service.workflows.retention import RetentionWorkflow
from session_service.workflows.split import SplitWorkflow

ALL_WORKFLOWS: list[type] = [
    MergeWorkflow,
    SplitWorkflow,
    DeleteWorkflow,
    RetentionWorkflow,
    ExportWorkflow,
    ImportWorkflow,
    IndexWorkflow,
]

__all__ = [
    "ALL_WORKFLOWS",
    "DeleteWorkflow",
    "ExportWorkflow",
    "ImportWorkflow",
    "IndexWorkflow",
    "MergeWorkflow",
    "RetentionWorkflow",
    "SplitWorkflow",
]
