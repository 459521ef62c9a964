"""Inputs and results of every workflow and activity: one model each, in one module.

Kept apart from the HTTP models so that a field can be added (with a default)
without breaking callers or the replay of running histories. Workflows carry
ids and counts only, never points (DESIGN.md saga rule 5).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from session_service.domain.models import SessionConfiguration
from session_service.domain.retention_rules import RetentionRules

PointId = int | str


class OperationKind(StrEnum):
    MERGE = "merge"
    SPLIT = "split"
    DELETE = "delete"
    IMPORT = "import"
    EXPORT = "export"
    CLEANUP = "cleanup"
    OFFLOAD = "offload"
    RELOAD = "reload"


class ErrorType(StrEnum):
    """``ApplicationError.type`` of business refusals; the API maps each to an HTTP status."""

    not_found = "NotFound"
    conflict = "Conflict"
    locked = "Locked"
    invalid = "Invalid"


ERROR_STATUS = {
    ErrorType.not_found: 404,
    ErrorType.conflict: 409,
    ErrorType.locked: 409,
    ErrorType.invalid: 422,
}


class StepOptions(BaseModel):
    """How activities of one run are timed and sized; defaults suit production."""

    batch_size: int = 1024
    export_batch_size: int = 4096
    batches_per_call: int = 16
    heartbeat_timeout_seconds: float = 30.0
    start_to_close_seconds: float = 3600.0
    maximum_attempts: int = 5

    @property
    def heartbeat_timeout(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_timeout_seconds)


class Progress(BaseModel):
    phase: str = "starting"
    points_total: int = 0
    points_done: int = 0
    resumed_from_checkpoint: int = 0
    sessions_done: int = 0


# Postgres steps


class SessionSnapshot(BaseModel):
    id: str
    collection: str
    vector_size: int
    distance: str
    status: str
    owner_id: str | None = None


class LockInput(BaseModel):
    operation_id: str
    session_ids: list[str]
    same_vectors: bool = False
    allow_deleted: bool = False
    need_live: bool = False  # refuse an offloaded session (its points are not there)
    no_exports: bool = False  # refuse while an export of a session is being written


class LockResult(BaseModel):
    sessions: list[SessionSnapshot]


class UnlockInput(BaseModel):
    operation_id: str
    session_ids: list[str]


class NewSessionInput(BaseModel):
    operation_id: str
    session_id: str
    name: str
    description: str | None = None
    owner_id: str | None = None
    configuration: SessionConfiguration
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DiscardInput(BaseModel):
    operation_id: str
    session_id: str


class FinishMergeInput(BaseModel):
    operation_id: str
    target_id: str
    source_ids: list[str]
    archive_sources: bool
    tags: list[str] | None = None
    point_count: int
    collisions: int


class SplitPartResult(BaseModel):
    session_id: str
    points: int


class FinishSplitInput(BaseModel):
    operation_id: str
    source_id: str
    parts: list[SplitPartResult]
    removed_points: int
    archive_original: bool


class DeleteRowInput(BaseModel):
    operation_id: str
    session_id: str


# Qdrant steps


class CopyInput(BaseModel):
    source: str
    target: str
    offset: PointId | None = None
    batch_size: int
    max_batches: int


class CopyResult(BaseModel):
    read: int
    next_offset: PointId | None
    resumed_from: int = 0


class CopyCheckpoint(BaseModel):
    """Heartbeat details of a copy: where to resume after a retry on any worker."""

    offset: PointId | None
    read: int
    started: bool = True


class CopyIdsInput(BaseModel):
    source: str
    target: str
    ids: list[PointId]
    batch_size: int
    # Set by splits that can resume (patch split-copy-pauses-on-drain): on a worker's
    # shutdown the step may stop after the batch in hand and say where to go on from.
    may_pause: bool = False
    start_batch: int = 0  # the batch to start from (a call after a pause)
    found_before: int = 0  # points found by the calls before this one


class CopyIdsResult(BaseModel):
    found: int  # points found, counting the calls before this one
    next_batch: int | None = None  # set when paused: the next call starts there


class RemoveInput(BaseModel):
    source: str
    ids: list[PointId]
    copied_to: list[str]
    batch_size: int
    # as CopyIdsInput's (patch split-removal-pauses-on-drain)
    may_pause: bool = False
    start_batch: int = 0
    removed_before: int = 0


class RemoveResult(BaseModel):
    removed: int  # counting the calls before this one
    next_batch: int | None = None  # set when paused: the next call starts there


# workflows


class MergeInput(BaseModel):
    source_ids: list[str]
    target_id: str
    target_name: str
    target_description: str | None = None
    owner_id: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    archive_sources: bool = True
    options: StepOptions = Field(default_factory=StepOptions)


class SplitPart(BaseModel):
    session_id: str
    name: str
    point_ids: list[PointId]
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SplitInput(BaseModel):
    source_id: str
    parts: list[SplitPart]
    archive_original: bool = False
    remove_points: bool = True
    options: StepOptions = Field(default_factory=StepOptions)


class SplitResult(BaseModel):
    new_sessions: list[str]
    assigned_points: int
    removed_points: int
    skipped_points: int = 0
    skipped_parts: int = 0


class DeleteInput(BaseModel):
    """One session (the API: all or nothing, a refusal ends the operation), or a batch
    (retention: each session's outcome of its own)."""

    session_id: str | None = None
    session_ids: list[str] = Field(default_factory=list)
    options: StepOptions = Field(default_factory=StepOptions)

    @model_validator(mode="after")
    def _one_or_a_batch(self) -> DeleteInput:
        if (self.session_id is None) == (not self.session_ids):
            raise ValueError("give either session_id or session_ids")
        return self


class DeleteResult(BaseModel):
    message: str
    permanent: bool = True


class DeleteBatchResult(DeleteResult):
    """A batch's per-session outcomes; the API never sees one (it deletes one session)."""

    deleted: int = 0
    held: list[str] = Field(default_factory=list)  # held by another operation: untouched
    failures: list[dict[str, str]] = Field(default_factory=list)  # session_id, error


class HeldSession(BaseModel):
    id: str
    collection: str


class HoldInput(BaseModel):
    operation_id: str
    session_ids: list[str]


class HoldResult(BaseModel):
    sessions: list[HeldSession]  # now held by this operation
    held_by_others: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class DropCollectionsInput(BaseModel):
    sessions: list[HeldSession]


class DropCollectionsResult(BaseModel):
    """Also the heartbeat checkpoint: ``dropped`` and ``failures`` cover the first
    ``len(dropped) + len(failures)`` sessions."""

    dropped: list[str] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)


class DeleteRowsInput(BaseModel):
    operation_id: str
    delete_ids: list[str]  # collections dropped: rows go
    release_ids: list[str] = Field(default_factory=list)  # drops failed: rows stay, unheld


# retention (scheduled sweeps and POST /sessions/cleanup)


class RetentionTotals(BaseModel):
    processed: int = 0
    archived: int = 0
    deleted: int = 0
    skipped_locked: int = 0
    failed: int = 0
    offloaded: int = 0
    archived_ids: list[str] = Field(default_factory=list)
    deleted_ids: list[str] = Field(default_factory=list)
    offloaded_ids: list[str] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)


class RetentionInput(BaseModel):
    """A sweep's state: the same model starts it and carries it across continue-as-new."""

    rules: RetentionRules | None = None  # None: read the stored policy (scheduled runs)
    dry_run: bool = False
    now: datetime | None = None
    phase: str = "archive"
    after_id: str | None = None
    totals: RetentionTotals = Field(default_factory=RetentionTotals)
    page_size: int = 500
    pages_per_run: int = 10
    delete_concurrency: int = Field(4, ge=1)  # DeleteWorkflow children at once
    delete_batch_size: int = Field(200, ge=1)  # sessions per child
    ids_listed: int = Field(1000, ge=0)  # a dry run lists at most this many ids of each kind
    options: StepOptions = Field(default_factory=StepOptions)


class EvaluateInput(BaseModel):
    operation_id: str
    rules: RetentionRules
    now: datetime
    after_id: str | None
    page_size: int


class ArchiveInput(BaseModel):
    operation_id: str
    session_ids: list[str]


class PolicyLoad(BaseModel):
    rules: RetentionRules
    enabled: bool


class RetentionResult(BaseModel):
    message: str
    cleanup_stats: dict[str, Any]
    policy_applied: dict[str, Any]


# export and import


class ExportInput(BaseModel):
    session_id: str
    export_id: str
    owner_id: str | None = None
    options: StepOptions = Field(default_factory=StepOptions)


class ExportRecordInput(BaseModel):
    export_id: str
    session_id: str
    owner_id: str | None = None
    operation_id: str


class WriteExportInput(BaseModel):
    export_id: str
    session_id: str
    batch_size: int


class ExportCheckpoint(BaseModel):
    """Heartbeat of a write: the file is whole up to ``file_bytes`` (a gzip member boundary)."""

    file_bytes: int
    points: int
    offset: PointId | None


class ExportResult(BaseModel):
    export_id: str
    size_bytes: int
    points: int
    sha256: str


class ImportInput(BaseModel):
    artifact_key: str
    staged: bool  # a staging file of this import (deleted at the end), not a kept export
    session_id: str
    new_name: str | None = None
    owner_id: str | None = None
    owner_from_artifact: bool = False
    options: StepOptions = Field(default_factory=StepOptions)


class ImportHeader(BaseModel):
    session: dict[str, Any]
    vector_size: int
    distance: str
    points: int
    sha256: str


class ImportPointsInput(BaseModel):
    artifact_key: str
    collection: str
    batch_size: int
    verify: bool = False  # one pass: check every line and the trailer while importing
    # a reload (section G): the trailer's SHA-256 must be the one recorded at the offload
    expect_sha256: str | None = None


class FinishImportInput(BaseModel):
    operation_id: str
    session_id: str
    processing_stats: dict[str, Any] = Field(default_factory=dict)
    model_usage: dict[str, Any] = Field(default_factory=dict)


# cold sessions (API.md section G)


class OffloadInput(BaseModel):
    session_id: str
    options: StepOptions = Field(default_factory=StepOptions)


class ReloadInput(BaseModel):
    session_id: str
    keep_artifact: bool = False  # OFFLOAD_KEEP_ARTIFACT_AFTER_RELOAD
    options: StepOptions = Field(default_factory=StepOptions)


class OffloadLockResult(BaseModel):
    """The session an offload or reload now holds, and its artifact when offloaded."""

    session_id: str
    collection: str
    storage: str
    vector_size: int = 384
    distance: str = "Cosine"
    artifact_key: str | None = None
    artifact_points: int = 0
    artifact_sha256: str | None = None


class WriteOffloadInput(BaseModel):
    session_id: str
    artifact_key: str
    batch_size: int


class ArtifactCheck(BaseModel):
    """An artifact as read back: its key, count, content SHA-256 and size on disk."""

    key: str
    points: int
    sha256: str
    size_bytes: int


class VerifyOffloadInput(BaseModel):
    collection: str
    written: ArtifactCheck


class MarkOffloadedInput(BaseModel):
    operation_id: str
    session_id: str
    artifact: ArtifactCheck


class MarkLiveInput(BaseModel):
    operation_id: str
    session_id: str
    release: bool = False


class VerifyReloadInput(BaseModel):
    collection: str
    points: int


class ColdResult(BaseModel):
    """The final body of an offload or a reload."""

    message: str
    session_id: str
    storage: str
    points: int
    size_bytes: int = 0
    sha256: str | None = None


class EnsureLiveInput(BaseModel):
    session_ids: list[str]
    options: StepOptions = Field(default_factory=StepOptions)


# search index follow-up (after merge, split and import)


class IndexInput(BaseModel):
    collections: list[str]
    session_ids: list[str] = Field(default_factory=list)
    options: StepOptions = Field(default_factory=StepOptions)


class IndexOutcome(BaseModel):
    collection: str
    built: bool
    points: int = 0
    indexed: int = 0
    seconds: float = 0.0
    replayed: int = 0


class IndexResult(BaseModel):
    collections: list[IndexOutcome] = Field(default_factory=list)


# the operations record (a row per operation, written by the workflow's own activities)
