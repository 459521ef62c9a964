"""The steps of the sagas: every activity of the service, declared once, typed.

A :class:`Step` is the contract between the workflows that call an activity and the
method that implements it: its name (the activity type in every recorded history:
never rename one), its input type and its result type. Workflows call steps through
the saga (``saga.step(steps.LOCK_SESSIONS, LockInput(...))``), so mypy checks the
argument and infers the result; activities bind their method to the declaration
with :func:`implements`, which checks the method's annotations when the module is
imported; tests replace an activity with :meth:`Step.fake`. No activity name is
spelled anywhere else.

Imports only the payload types (``operation_types``, ``models``): workflows import it
in the sandbox.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from temporalio import activity

from session_service.domain.models import SessionModel
from session_service.domain.operation_records import OperationEnd, OperationStart
from session_service.domain.retention_rules import EvaluateResult
from session_service.temporal.contracts import (
    ArchiveInput,
    ArtifactCheck,
    CopyIdsInput,
    CopyIdsResult,
    CopyInput,
    CopyResult,
    DeleteRowInput,
    DeleteRowsInput,
    DiscardInput,
    DropCollectionsInput,
    DropCollectionsResult,
    EnsureLiveInput,
    EvaluateInput,
    ExportRecordInput,
    ExportResult,
    FinishImportInput,
    FinishMergeInput,
    FinishSplitInput,
    HoldInput,
    HoldResult,
    ImportHeader,
    ImportPointsInput,
    IndexOutcome,
    LockInput,
    LockResult,
    MarkLiveInput,
    MarkOffloadedInput,
    NewSessionInput,
    OffloadLockResult,
    PolicyLoad,
    RemoveInput,
    RemoveResult,
    UnlockInput,
    VerifyOffloadInput,
    VerifyReloadInput,
    WriteExportInput,
    WriteOffloadInput,
)

In = TypeVar("In")
R = TypeVar("R")
S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])

_STEP_ATTR = "__session_step__"


@dataclass(frozen=True)
class Step(Generic[In, R]):
    """One activity: ``name`` (its type in histories), the type of its one argument
    (``None``: it takes none) and of its result (``None``: it returns nothing)."""

    name: str
    input: type[In] | None
    result: type[R] | None

    def fake(self, fn: Callable[[In], Awaitable[R]]) -> Callable[[In], Awaitable[R]]:
        """``fn`` registered as this step (tests pass it to ``worker_of(overrides=...)``
        to inject a fault); its annotations are checked like an implementation's."""
        _check(self, fn, method=False)
        return _bind(self, fn)

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def _same(declared: Any, annotated: Any) -> bool:
    if annotated is Any:
        return True
    return bool(annotated == (type(None) if declared is None else declared))


def _check(step: Step[Any, Any], fn: Callable[..., Any], *, method: bool) -> None:
    """``fn``'s parameters and return annotations must be the step's types."""
    where = f"{getattr(fn, '__qualname__', fn)} (step {step.name})"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - reported with what was being bound
        raise TypeError(f"{where}: annotations don't resolve: {exc}") from exc
    params = list(inspect.signature(fn).parameters.values())[1 if method else 0 :]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    if step.input is None:
        if required:
            raise TypeError(f"{where}: the step takes no argument; this takes {len(required)}")
    else:
        if len(params) != 1:
            raise TypeError(f"{where}: the step takes one argument; this takes {len(params)}")
        if not _same(step.input, hints.get(params[0].name, Any)):
            raise TypeError(
                f"{where}: takes {hints.get(params[0].name)!r}; the step's input is {step.input!r}"
            )
    if "return" not in hints or not _same(step.result, hints["return"]):
        raise TypeError(
            f"{where}: returns {hints.get('return')!r}; the step's result is {step.result!r}"
        )


def _bind(step: Step[Any, Any], fn: F) -> F:
    setattr(fn, _STEP_ATTR, step)
    return activity.defn(name=step.name)(fn)


@overload
def implements(
    step: Step[None, R],
) -> Callable[[Callable[[S], Awaitable[R]]], Callable[[S], Awaitable[R]]]: ...


@overload
def implements(
    step: Step[In, R],
) -> Callable[[Callable[[S, In], Awaitable[R]]], Callable[[S, In], Awaitable[R]]]: ...


def implements(step: Step[Any, Any]) -> Callable[[F], F]:
    """Bind an activity method to its declaration: ``activity.defn(name=step.name)``,
    after checking (at import) that the method takes and returns the step's types."""

    def bind(fn: F) -> F:
        _check(step, fn, method=True)
        return _bind(step, fn)

    return bind


def step_of(fn: object) -> Step[Any, Any] | None:
    """The step ``fn`` (a function or a bound method) implements, if any."""
    found = getattr(fn, _STEP_ATTR, None)
    return found if isinstance(found, Step) else None


def implemented_by(obj: object) -> list[Callable[..., Any]]:
    """The bound methods of ``obj`` that implement a step: what a worker registers."""
    out: list[Callable[..., Any]] = []
    for name, member in inspect.getmembers(type(obj), inspect.isfunction):
        if step_of(member) is not None:
            out.append(getattr(obj, name))
    return out


# sessions (Postgres rows and their collections)
LOCK_SESSIONS: Step[LockInput, LockResult] = Step("lock_sessions", LockInput, LockResult)
UNLOCK_SESSIONS: Step[UnlockInput, None] = Step("unlock_sessions", UnlockInput, None)
CREATE_SESSION: Step[NewSessionInput, None] = Step("create_session", NewSessionInput, None)
DISCARD_SESSION: Step[DiscardInput, None] = Step("discard_session", DiscardInput, None)
FINISH_MERGE: Step[FinishMergeInput, SessionModel] = Step(
    "finish_merge", FinishMergeInput, SessionModel
)
FINISH_SPLIT: Step[FinishSplitInput, None] = Step("finish_split", FinishSplitInput, None)
DELETE_SESSION_ROW: Step[DeleteRowInput, None] = Step("delete_session_row", DeleteRowInput, None)
HOLD_FOR_DELETE: Step[HoldInput, HoldResult] = Step("hold_for_delete", HoldInput, HoldResult)
DELETE_SESSION_ROWS: Step[DeleteRowsInput, None] = Step(
    "delete_session_rows", DeleteRowsInput, None
)

# points (the vector engine)
COUNT_POINTS: Step[str, int] = Step("count_points", str, int)
COPY_POINTS: Step[CopyInput, CopyResult] = Step("copy_points", CopyInput, CopyResult)
COPY_POINTS_BY_ID: Step[CopyIdsInput, CopyIdsResult] = Step(
    "copy_points_by_id", CopyIdsInput, CopyIdsResult
)
REMOVE_POINTS: Step[RemoveInput, RemoveResult] = Step("remove_points", RemoveInput, RemoveResult)
DROP_COLLECTION: Step[str, None] = Step("drop_collection", str, None)
DROP_COLLECTIONS: Step[DropCollectionsInput, DropCollectionsResult] = Step(
    "drop_collections", DropCollectionsInput, DropCollectionsResult
)
BUILD_INDEX: Step[str, IndexOutcome] = Step("build_index", str, IndexOutcome)

# retention
LOAD_POLICY: Step[None, PolicyLoad] = Step("load_policy", None, PolicyLoad)
EVALUATE_PAGE: Step[EvaluateInput, EvaluateResult] = Step(
    "evaluate_page", EvaluateInput, EvaluateResult
)
ARCHIVE_SESSIONS: Step[ArchiveInput, int] = Step("archive_sessions", ArchiveInput, int)
RESTORE_ARCHIVED: Step[str, None] = Step("restore_archived", str, None)
FORGET_ARCHIVED: Step[str, None] = Step("forget_archived", str, None)

# export and import (artifacts)
CREATE_EXPORT_RECORD: Step[ExportRecordInput, None] = Step(
    "create_export_record", ExportRecordInput, None
)
DISCARD_EXPORT: Step[str, None] = Step("discard_export", str, None)
WRITE_EXPORT: Step[WriteExportInput, ExportResult] = Step(
    "write_export", WriteExportInput, ExportResult
)
VALIDATE_IMPORT: Step[str, ImportHeader] = Step("validate_import", str, ImportHeader)
READ_IMPORT_HEADER: Step[str, ImportHeader] = Step("read_import_header", str, ImportHeader)
IMPORT_POINTS: Step[ImportPointsInput, int] = Step("import_points", ImportPointsInput, int)
FINISH_IMPORT: Step[FinishImportInput, SessionModel] = Step(
    "finish_import", FinishImportInput, SessionModel
)
DELETE_ARTIFACT: Step[str, None] = Step("delete_artifact", str, None)

# offload and reload (API.md section G)
HOLD_FOR_STORAGE: Step[LockInput, OffloadLockResult] = Step(
    "hold_for_storage", LockInput, OffloadLockResult
)
WRITE_OFFLOAD: Step[WriteOffloadInput, ArtifactCheck] = Step(
    "write_offload", WriteOffloadInput, ArtifactCheck
)
VERIFY_OFFLOAD: Step[VerifyOffloadInput, ArtifactCheck] = Step(
    "verify_offload", VerifyOffloadInput, ArtifactCheck
)
MARK_OFFLOADED: Step[MarkOffloadedInput, None] = Step("mark_offloaded", MarkOffloadedInput, None)
MARK_LIVE: Step[MarkLiveInput, None] = Step("mark_live", MarkLiveInput, None)
CREATE_COLLECTION: Step[OffloadLockResult, None] = Step(
    "create_collection", OffloadLockResult, None
)
VERIFY_RELOAD: Step[VerifyReloadInput, int] = Step("verify_reload", VerifyReloadInput, int)
ENSURE_LIVE: Step[EnsureLiveInput, list[str]] = Step("ensure_live", EnsureLiveInput, list[str])

# the operations record (the record interceptor) and the idempotency-key sweep
RECORD_OPERATION_START: Step[OperationStart, None] = Step(
    "record_operation_start", OperationStart, None
)
RECORD_OPERATION_END: Step[OperationEnd, None] = Step("record_operation_end", OperationEnd, None)
SWEEP_IDEMPOTENCY_KEYS: Step[None, int] = Step("sweep_idempotency_keys", None, int)


def declared() -> list[Step[Any, Any]]:
    """Every step of this module, in declaration order."""
    return [v for v in globals().values() if isinstance(v, Step)]
