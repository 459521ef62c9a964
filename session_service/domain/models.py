"""Pydantic schemas shared by the API, the stores and (later) workflows. No I/O."""

from __future__ import annotations

import json
import math
import re
import uuid
from contextvars import ContextVar
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_TAGS = 50
MAX_TAG_LEN = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_VECTOR_SIZE = 65536
MAX_POINTS_PER_CALL = 1000
MAX_MERGE_SOURCES = 100
MAX_SPLIT_PARTS = 100
MAX_PAGE = 1000
MAX_JSON_DEPTH = 32
INT64 = (-(2**63), 2**63 - 1)
ANY64 = (-(2**63), 2**64 - 1)  # int64, or a uint64 point id
BAD_REQUEST = "bad_request"
"""Validation error type answered 400, not 422: where the first service answered 400."""


class SessionStatus(StrEnum):
    active = "active"
    archived = "archived"
    shared = "shared"
    deleted = "deleted"


class Distance(StrEnum):
    cosine = "Cosine"
    dot = "Dot"
    euclid = "Euclid"
    manhattan = "Manhattan"


class Storage(StrEnum):
    """Where a session's points are (API.md section G): in the vector engine, or moved out
    into an artifact until their first use."""

    live = "live"
    offloaded = "offloaded"


class Permission(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"


PERMISSION_RANK = {Permission.read: 1, Permission.write: 2, Permission.admin: 3}
OWNER_RANK = 4


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


_Path = tuple[Any, str | int] | None  # (parent path, key): built in O(1), spelled on error


def _where(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out or "body"


def _plain_numbers(item: list[Any], low: int, high: int) -> bool:
    """True for a list of storable numbers only (a vector, say), found in C loops: the sum
    fails on anything but numbers and is not finite when any is NaN or infinite. False
    means "look at each item"."""
    try:
        total = sum(item)
    except (TypeError, OverflowError):
        return False
    if isinstance(total, float) and not math.isfinite(total):
        return False
    return bool(item) and low <= min(item) and max(item) <= high


def check_json(value: Any, *, int_range: tuple[int, int] = ANY64) -> None:
    """Refuse what Postgres, Qdrant or a later JSON dump cannot hold, anywhere in ``value``:
    NUL characters and lone surrogates in text (keys too), NaN and infinities, integers
    outside ``int_range``, and nesting deeper than ``MAX_JSON_DEPTH`` (a recursion bomb for
    every encoder after us). Iterative, so depth itself can't blow the stack."""
    low, high = int_range
    stack: list[tuple[Any, _Path, int]] = [(value, None, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise ValueError(
                    f"{_where(path)}: text must not hold NUL (\\u0000) or lone surrogates"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{_where(path)}: numbers must be finite (no NaN or infinity)")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not low <= item <= high:
                raise ValueError(f"{_where(path)}: a number is out of range ({low} to {high})")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ValueError(
                    f"{_where(path)}: JSON is nested deeper than {MAX_JSON_DEPTH} levels"
                )
            if isinstance(item, dict):
                for key, sub in item.items():
                    stack.append((key, (path, key), depth + 1))
                    stack.append((sub, (path, key), depth + 1))
            elif not _plain_numbers(item, low, high):
                stack.extend((sub, (path, i), depth + 1) for i, sub in enumerate(item))


def _check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    check_json(value, int_range=INT64)
    return value


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    check_json(value, int_range=INT64)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES}")
    return value


def _check_tags(value: list[str]) -> list[str]:
    seen: list[str] = []
    for tag in value:
        if not tag.strip():
            raise ValueError("tags must not be empty strings")
        if tag not in seen:
            seen.append(tag)
    return seen


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Tag = Annotated[str, Field(max_length=MAX_TAG_LEN)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_check_tags)]
Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json_object)]
UserId = Annotated[str, Field(min_length=1, max_length=200)]


class SessionConfiguration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clustering_params: JsonObject = Field(default_factory=dict)
    embedding_model: str | None = None
    llm_model: str | None = None
    processing_options: JsonObject = Field(default_factory=dict)
    vector_size: StrictInt = Field(default=384, ge=1, le=MAX_VECTOR_SIZE)
    distance: Distance = Distance.cosine


class ConfigurationUpdate(BaseModel):
    """Every field optional: only what is sent replaces the stored value."""

    model_config = ConfigDict(extra="ignore")

    clustering_params: JsonObject | None = None
    embedding_model: str | None = None
    llm_model: str | None = None
    processing_options: JsonObject | None = None
    vector_size: StrictInt | None = Field(default=None, ge=1, le=MAX_VECTOR_SIZE)
    distance: Distance | None = None


class ProcessingStats(BaseModel):
    urls_processed: int = 0
    content_analyzed: int = 0
    clusters_generated: int = 0
    embeddings_created: int = 0
    last_processing_time: datetime | None = None


class ModelUsage(BaseModel):
    llm_models_used: list[str] = Field(default_factory=list)
    embedding_models_used: list[str] = Field(default_factory=list)
    model_switches: int = 0
    last_model_switch: datetime | None = None


class SessionModel(BaseModel):
    """The public session shape of API.md section A (plus ``version``)."""

    id: str
    name: str
    description: str | None = None
    status: SessionStatus
    created_at: datetime
    updated_at: datetime
    owner_id: str | None = None
    shared_with: list[str] = Field(default_factory=list)
    qdrant_collection_name: str
    configuration: SessionConfiguration
    processing_stats: ProcessingStats
    model_usage_history: ModelUsage
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int = 1
    storage: Storage = Storage.live


class ArtifactRef(BaseModel):
    """The artifact that holds an offloaded session's points, as verified when written."""

    key: str
    points: int
    sha256: str
    size_bytes: int = 0
    offloaded_at: datetime | None = None


class SessionRecord(SessionModel):
    """A session as the repository reads it: the public shape plus what access checks need."""

    permissions: dict[str, list[Permission]] = Field(default_factory=dict)
    locked_by: str | None = None
    artifact: ArtifactRef | None = None

    def public(self) -> SessionModel:
        return SessionModel.model_validate(
            self.model_dump(exclude={"permissions", "locked_by", "artifact"})
        )


_CHECKED_BODY: ContextVar[bool] = ContextVar("checked_body", default=False)


class StrictBody(BaseModel):
    """Request bodies refuse unknown fields so that a typo is a 422, not a silent no-op,
    and anything ``check_json`` refuses, wherever it sits, before a field sees it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _storable(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Checks the whole body once, at the outermost model: nested ones (each point of
        an upsert) would walk their part again."""
        if _CHECKED_BODY.get() or not isinstance(data, dict):
            return handler(data)
        check_json(data)
        token = _CHECKED_BODY.set(True)
        try:
            return handler(data)
        finally:
            _CHECKED_BODY.reset(token)


class SessionCreate(StrictBody):
    name: Name
    description: Description | None = None
    owner_id: UserId | None = None
    configuration: SessionConfiguration | None = None
    tags: Tags = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)


class SessionUpdate(StrictBody):
    name: Name | None = None
    description: Description | None = None
    status: SessionStatus | None = None
    configuration: ConfigurationUpdate | None = None
    tags: Tags | None = None
    metadata: Metadata | None = None


class StatsUpdate(StrictBody):
    urls_processed: StrictInt | None = Field(default=None, ge=0, le=10**9)
    content_analyzed: StrictInt | None = Field(default=None, ge=0, le=10**9)
    clusters_generated: StrictInt | None = Field(default=None, ge=0, le=10**9)
    embeddings_created: StrictInt | None = Field(default=None, ge=0, le=10**9)
    metadata: Metadata | None = None


class ShareRequest(StrictBody):
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=100)]
    permissions: Annotated[list[Permission], Field(min_length=1)] = Field(
        default_factory=lambda: [Permission.read]
    )


class CompareRequest(StrictBody):
    session_ids: Annotated[list[str], Field(max_length=MAX_MERGE_SOURCES)]


class ModelType(StrEnum):
    llm = "llm"
    embedding = "embedding"


class RetentionPolicy(StrictBody):
    max_age_days: StrictInt | None = Field(default=None, ge=0, le=36500)
    max_sessions_per_user: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    auto_archive_inactive_days: StrictInt | None = Field(default=30, ge=0, le=36500)
    auto_delete_archived_days: StrictInt | None = Field(default=90, ge=0, le=36500)
    # cold sessions (section G): archived sessions inactive this long are offloaded
    offload_archived_after_days: StrictInt | None = Field(default=None, ge=1, le=36500)
    schedule: str = Field(default="0 3 * * *", max_length=100)
    enabled: bool = True

    @field_validator("schedule")
    @classmethod
    def _cron_shape(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                "schedule must be a cron expression of 5 fields (minute hour day month weekday)"
            )
        allowed = set("0123456789*/,-")
        for f in fields:
            if not set(f) <= allowed:
                raise ValueError(f"schedule field {f!r} may only hold digits and * / , -")
        return value

    @model_serializer(mode="wrap")
    def _section_a_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``offload_archived_after_days`` (section G) appears once it is set, so a policy
        without it reads back exactly as it was written (section A's shape)."""
        out: dict[str, Any] = handler(self)
        if out.get("offload_archived_after_days") is None:
            out.pop("offload_archived_after_days", None)
        return out


# Points (section C)

PointId = StrictInt | uuid.UUID


def check_point_id(value: int | str | uuid.UUID) -> int | str:
    if isinstance(value, bool):
        raise ValueError("a point id is an unsigned integer or a UUID")
    if isinstance(value, int):
        if value < 0 or value >= 2**64:
            raise ValueError("an integer point id must be between 0 and 2^64-1")
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError(f"point id {value!r} is neither an unsigned integer nor a UUID") from exc


PointIdIn = Annotated[StrictInt | str, AfterValidator(check_point_id)]


class PointIn(StrictBody):
    id: PointIdIn
    vector: Annotated[
        list[StrictFloat | StrictInt], Field(min_length=1, max_length=MAX_VECTOR_SIZE)
    ]
    payload: Metadata = Field(default_factory=dict)


class PointsUpsert(StrictBody):
    points: Annotated[list[PointIn], Field(min_length=1, max_length=MAX_POINTS_PER_CALL)]


class PointsDelete(StrictBody):
    ids: Annotated[list[PointIdIn], Field(min_length=1, max_length=MAX_POINTS_PER_CALL)]


class PointOut(BaseModel):
    id: int | str
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None


class PointsPage(BaseModel):
    points: list[PointOut]
    next_offset: int | str | None = None


class CollectionInfo(BaseModel):
    name: str
    exists: bool
    points_count: int
    vector_size: int | None = None
    distance: str | None = None
    # cold sessions (section G): only for an offloaded session (the API leaves them out
    # otherwise, keeping section C's shape), whose points_count is the artifact's
    offloaded: bool | None = None
    artifact_points: int | None = None
    artifact_size_bytes: int | None = None


class Message(BaseModel):
    message: str


class DeleteResult(BaseModel):
    message: str
    permanent: bool


class Collaborators(BaseModel):
    session_id: str
    owner_id: str | None
    shared_with: list[str]
    total_collaborators: int
    permissions: dict[str, list[Permission]]


class HealthStatus(BaseModel):
    status: Literal["healthy", "unhealthy"]
    service: str = "session"
    version: str
    checks: dict[str, str]


# Long-running operations (section B)

MAX_SPLIT_POINT_IDS = 100_000


def _two_sources(ids: list[str]) -> list[str]:
    if len(ids) < 2:
        raise PydanticCustomError(BAD_REQUEST, "a merge needs at least two source sessions")
    return ids


class MergeRequest(StrictBody):
    source_session_ids: Annotated[
        list[str], Field(max_length=MAX_MERGE_SOURCES), AfterValidator(_two_sources)
    ]
    target_name: Name | None = None
    target_description: Description | None = None
    owner_id: UserId | None = None
    tags: Tags | None = None
    metadata: Metadata = Field(default_factory=dict)
    archive_sources: bool = True


class SplitPartRequest(StrictBody):
    name: Name
    point_ids: Annotated[list[PointIdIn], Field(min_length=1)]
    description: Description | None = None
    tags: Tags = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)


class SplitRequest(StrictBody):
    parts: Annotated[list[SplitPartRequest], Field(max_length=MAX_SPLIT_PARTS)]
    archive_original: bool = False
    remove_points: bool = True

    @field_validator("parts")
    @classmethod
    def _bounded_ids(cls, parts: list[SplitPartRequest]) -> list[SplitPartRequest]:
        if not parts:
            raise PydanticCustomError(BAD_REQUEST, "a split needs at least one part")
        total = sum(len(p.point_ids) for p in parts)
        if total > MAX_SPLIT_POINT_IDS:
            raise ValueError(
                f"parts list {total} point ids in all; the limit is {MAX_SPLIT_POINT_IDS}"
            )
        return parts


class OperationStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class OperationError(BaseModel):
    type: str
    message: str


class Operation(BaseModel):
    id: str
    kind: str
    status: OperationStatus
    done: bool
    session_ids: list[str]
    progress: dict[str, Any] | None = None
    result: Any = None
    error: OperationError | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str | None = None
    owner_id: str | None = None
    links: dict[str, str]
