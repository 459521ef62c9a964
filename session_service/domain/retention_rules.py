"""Which sessions a retention policy archives or deletes: pure decisions, no I/O.

API.md: active or shared sessions inactive (``updated_at``) longer than
``auto_archive_inactive_days`` are archived; so are sessions created more than
``max_age_days`` ago, and an owner's active sessions beyond the
``max_sessions_per_user`` most recently used; archived or soft-deleted
sessions older than ``auto_delete_archived_days`` are deleted permanently. A
session archived by a run is not deleted by the same run. Archived sessions
inactive longer than ``offload_archived_after_days`` (and not deleted) are
offloaded (section G).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from session_service.domain.models import RetentionPolicy

LIVE = ("active", "shared")
RETIRED = ("archived", "deleted")


class RetentionRules(BaseModel):
    max_age_days: int | None = None
    max_sessions_per_user: int | None = None
    auto_archive_inactive_days: int | None = 30
    auto_delete_archived_days: int | None = 90
    offload_archived_after_days: int | None = None


class EvaluateResult(BaseModel):
    processed: int
    last_id: str | None
    archive: list[str] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)
    locked_archive: list[str] = Field(default_factory=list)
    locked_delete: list[str] = Field(default_factory=list)
    offload: list[str] = Field(default_factory=list)
    locked_offload: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    id: str
    status: str
    created_at: datetime
    updated_at: datetime
    locked_by: str | None
    owner_rank: int | None  # rank among the owner's active sessions, newest first
    archived_by_this_run: bool = False
    storage: str = "live"


@dataclass
class Decisions:
    archive: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    locked_archive: list[str] = field(default_factory=list)
    locked_delete: list[str] = field(default_factory=list)
    offload: list[str] = field(default_factory=list)
    locked_offload: list[str] = field(default_factory=list)


def _older(stamp: datetime, now: datetime, days: int | None) -> bool:
    return days is not None and stamp < now - timedelta(days=days)


def should_archive(c: Candidate, rules: RetentionRules, now: datetime) -> bool:
    if c.status not in LIVE:
        return False
    over_quota = (
        rules.max_sessions_per_user is not None
        and c.status == "active"
        and c.owner_rank is not None
        and c.owner_rank > rules.max_sessions_per_user
    )
    return (
        _older(c.updated_at, now, rules.auto_archive_inactive_days)
        or _older(c.created_at, now, rules.max_age_days)
        or over_quota
    )


def should_delete(c: Candidate, rules: RetentionRules, now: datetime) -> bool:
    return (
        c.status in RETIRED
        and not c.archived_by_this_run
        and _older(c.updated_at, now, rules.auto_delete_archived_days)
    )


def should_offload(c: Candidate, rules: RetentionRules, now: datetime) -> bool:
    """Archived sessions inactive longer than ``offload_archived_after_days`` move their
    points to an artifact (API.md section G); one this run archived is not yet old."""
    return (
        c.status == "archived"
        and c.storage == "live"
        and not c.archived_by_this_run
        and _older(c.updated_at, now, rules.offload_archived_after_days)
    )


def decide(candidates: list[Candidate], rules: RetentionRules, now: datetime) -> Decisions:
    """Sessions held by an operation are set aside (``locked_*``), not touched."""
    out = Decisions()
    for c in candidates:
        held = c.locked_by is not None
        if should_archive(c, rules, now):
            (out.locked_archive if held else out.archive).append(c.id)
        elif should_delete(c, rules, now):
            (out.locked_delete if held else out.delete).append(c.id)
        elif should_offload(c, rules, now):
            (out.locked_offload if held else out.offload).append(c.id)
    return out


def evaluation(candidates: list[Candidate], rules: RetentionRules, now: datetime) -> EvaluateResult:
    d = decide(candidates, rules, now)
    return EvaluateResult(
        processed=len(candidates),
        last_id=candidates[-1].id if candidates else None,
        archive=d.archive,
        delete=d.delete,
        locked_archive=d.locked_archive,
        locked_delete=d.locked_delete,
        offload=d.offload,
        locked_offload=d.locked_offload,
    )


def rules_of(policy: RetentionPolicy) -> RetentionRules:
    """The rules of a stored policy: the policy without its schedule and on/off switch."""
    return RetentionRules.model_validate(policy.model_dump(exclude={"schedule", "enabled"}))
