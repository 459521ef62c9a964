"""The registry of operation kinds: one entry per long-running operation.

Each :class:`OperationSpec` says what the rest of the service needs to know about a
kind: its :class:`OperationKind`, the name of its workflow (the workflow type in
every recorded history: never rename one), the workflow's input and result types,
and the permission needed to cancel it when its memo doesn't say. The search
attributes every operation carries are declared here too. It feeds:

- the API service (``operations.py``): which workflow to start, how to decode its
  result, who may cancel it;
- the worker (``worker.py``): the workflow classes (:func:`workflow_classes`) and the
  activity classes (:func:`activity_classes`) it must register;
- the embedded stack and the worker's cluster setup: :data:`SEARCH_ATTRIBUTES`;
- the operation-record interceptor (``workflows/record.py``): :func:`kind_of`;
- the tests (``tests/test_registry.py``).

A workflow class binds itself to its entry with ``@registry.MERGE.defn`` (which applies
``workflow.defn(name=...)`` after checking the ``run`` signature against the entry).

Name-only at import: this module imports the payload types and nothing of the
workflows, the activities or the stores (workflows import it in the sandbox);
:func:`workflow_classes` and :func:`activity_classes` import those packages when
called, by the worker and the tests.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey

from session_service.domain.models import Permission, SessionModel
from session_service.temporal.contracts import (
    ColdResult,
    DeleteInput,
    DeleteResult,
    ExportInput,
    ExportResult,
    ImportInput,
    IndexInput,
    IndexResult,
    MergeInput,
    OffloadInput,
    OperationKind,
    ReloadInput,
    RetentionInput,
    RetentionResult,
    SplitInput,
    SplitResult,
)

In = TypeVar("In")
R = TypeVar("R")
W = TypeVar("W", bound=type)

# search attributes of every operation (the dev server, the worker's cluster setup and
# every start read them here)
SESSION_IDS = SearchAttributeKey.for_keyword_list("SessionIds")
OPERATION_KIND = SearchAttributeKey.for_keyword("OperationKind")
OWNER_ID = SearchAttributeKey.for_keyword("OwnerId")
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = (SESSION_IDS, OPERATION_KIND, OWNER_ID)


def search_attribute_type(key: SearchAttributeKey[Any]) -> str:
    """The type as the Temporal CLI spells it: ``KEYWORD_LIST`` -> ``KeywordList``."""
    return key.indexed_value_type.name.title().replace("_", "")


@dataclass(frozen=True)
class WorkflowSpec(Generic[In, R]):
    """A workflow the worker runs: its type name and its ``run(input) -> result`` types."""

    name: str
    input: type[In]
    result: type[R]

    def defn(self, cls: W) -> W:
        """``workflow.defn(name=self.name)``, once ``cls.run`` is checked against the entry."""
        run = getattr(cls, "run", None)
        if run is None:
            raise TypeError(f"{cls.__qualname__} (workflow {self.name}) has no run method")
        hints = typing.get_type_hints(run)
        params = list(inspect.signature(run).parameters)[1:]
        if len(params) != 1 or hints.get(params[0]) is not self.input:
            raise TypeError(
                f"{cls.__qualname__}.run takes {[hints.get(p) for p in params]}; "
                f"workflow {self.name} is declared with input {self.input.__name__}"
            )
        if hints.get("return") is not self.result:
            raise TypeError(
                f"{cls.__qualname__}.run returns {hints.get('return')!r}; "
                f"workflow {self.name} is declared with result {self.result.__name__}"
            )
        return workflow.defn(name=self.name)(cls)


@dataclass(frozen=True)
class OperationSpec(WorkflowSpec[In, R]):
    """A workflow that is an operation of the API (a row in ``operations``)."""

    kind: OperationKind
    # who may cancel when the operation's memo doesn't say (it started before memos were
    # kept); None: its starter or a trusted service
    cancel_needs: Permission | None = None


MERGE: OperationSpec[MergeInput, SessionModel] = OperationSpec(
    "MergeWorkflow", MergeInput, SessionModel, OperationKind.MERGE, Permission.write
)
SPLIT: OperationSpec[SplitInput, SplitResult] = OperationSpec(
    "SplitWorkflow", SplitInput, SplitResult, OperationKind.SPLIT, Permission.admin
)
DELETE: OperationSpec[DeleteInput, DeleteResult] = OperationSpec(
    "DeleteWorkflow", DeleteInput, DeleteResult, OperationKind.DELETE, Permission.admin
)
CLEANUP: OperationSpec[RetentionInput, RetentionResult] = OperationSpec(
    "RetentionWorkflow", RetentionInput, RetentionResult, OperationKind.CLEANUP
)
EXPORT: OperationSpec[ExportInput, ExportResult] = OperationSpec(
    "ExportWorkflow", ExportInput, ExportResult, OperationKind.EXPORT, Permission.read
)
IMPORT: OperationSpec[ImportInput, SessionModel] = OperationSpec(
    "ImportWorkflow", ImportInput, SessionModel, OperationKind.IMPORT
)
OFFLOAD: OperationSpec[OffloadInput, ColdResult] = OperationSpec(
    "OffloadWorkflow", OffloadInput, ColdResult, OperationKind.OFFLOAD, Permission.admin
)
RELOAD: OperationSpec[ReloadInput, ColdResult] = OperationSpec(
    "ReloadWorkflow", ReloadInput, ColdResult, OperationKind.RELOAD, Permission.admin
)

# the workflow that builds search indexes after bulk writes: run by the worker, not an
# operation of the API (operators see it in the Temporal UI)
INDEX: WorkflowSpec[IndexInput, IndexResult] = WorkflowSpec(
    "IndexWorkflow", IndexInput, IndexResult
)

OPERATIONS: tuple[OperationSpec[Any, Any], ...] = (
    MERGE,
    SPLIT,
    DELETE,
    CLEANUP,
    EXPORT,
    IMPORT,
    OFFLOAD,
    RELOAD,
)
# older workflow types of a kind, replaced by a new type in OPERATIONS: the worker keeps
# running them until their last run has finished; the API starts only OPERATIONS (README,
# Shipping a workflow change)
RETIRED: tuple[OperationSpec[Any, Any], ...] = ()
WORKFLOWS: tuple[WorkflowSpec[Any, Any], ...] = (*OPERATIONS, *RETIRED, INDEX)

_BY_KIND = {op.kind: op for op in OPERATIONS}
_BY_WORKFLOW = {op.name: op for op in (*OPERATIONS, *RETIRED)}


def operation(kind: OperationKind) -> OperationSpec[Any, Any]:
    """The entry of a kind: the workflow the API starts for it."""
    return _BY_KIND[kind]


def kind_of(workflow_type: str) -> OperationKind | None:
    """The operation a workflow type runs; None for a workflow that is no operation."""
    spec = _BY_WORKFLOW.get(workflow_type)
    return spec.kind if spec else None


__all__ = [
    "CLEANUP",
    "DELETE",
    "EXPORT",
    "IMPORT",
    "INDEX",
    "MERGE",
    "OFFLOAD",
    "OPERATIONS",
    "OPERATION_KIND",
    "OWNER_ID",
    "RELOAD",
    "RETIRED",
    "SEARCH_ATTRIBUTES",
    "SESSION_IDS",
    "SPLIT",
    "WORKFLOWS",
    "OperationSpec",
    "WorkflowSpec",
    "kind_of",
    "operation",
    "search_attribute_type",
]
