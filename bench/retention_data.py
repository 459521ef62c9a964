"""Rows for ``bench.retention``, and the plain-SQL baseline sweeps it compares against.

Sessions are inserted straight into the ``sessions`` table (one ``INSERT ...
SELECT FROM unnest``): creating 10,000 Qdrant local-mode collections through the
API would take far longer than the sweep being measured, and the sweep only
reads rows. Their collections therefore don't exist, which DeleteWorkflow's
``drop_collection`` accepts ("if present").
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from session_service.operation_types import RetentionRules
from session_service.retention_rules import evaluation
from session_service.stores.repository import SessionRepository, create_pool

TARGET_PER_SECOND = 500.0  # the target: sessions evaluated per second
PAGE_SIZE = 500  # RetentionInput.page_size's default: what the API's sweeps use
DELETE_CONCURRENCY = 4  # RetentionInput.delete_concurrency's default

# The policy every sweep applies (POST /sessions/cleanup body).
POLICY = {
    "max_age_days": 365,
    "max_sessions_per_user": 20,
    "auto_archive_inactive_days": 30,
    "auto_delete_archived_days": 90,
}
RULES = RetentionRules.model_validate(POLICY)

# kind -> (status, created days ago (lo, hi), updated days ago (lo, hi), expected decision).
# Ages keep clear of the policy's edges so that seconds of clock drift change nothing.
KINDS: dict[str, tuple[str, tuple[int, int], tuple[int, int], str]] = {
    "fresh_active": ("active", (1, 300), (0, 25), "keep"),
    "inactive_active": ("active", (40, 300), (35, 200), "archive"),
    "too_old_active": ("active", (400, 900), (0, 25), "archive"),
    "fresh_shared": ("shared", (1, 300), (0, 25), "keep"),
    "recent_archived": ("archived", (40, 300), (1, 80), "keep"),
    "old_archived": ("archived", (100, 900), (95, 400), "delete"),
    "old_soft_deleted": ("deleted", (100, 900), (95, 400), "delete"),
    "recent_soft_deleted": ("deleted", (40, 300), (1, 80), "keep"),
}

# Shares of each kind, in percent of all sessions.
MIXES: dict[str, dict[str, float]] = {
    # the "mixed ages": 60 % fresh, 20 % inactive, 10 % archived long ago
    "standard": {
        "fresh_active": 60,
        "inactive_active": 20,
        "too_old_active": 3,
        "fresh_shared": 2,
        "recent_archived": 3,
        "old_archived": 10,
        "old_soft_deleted": 1,
        "recent_soft_deleted": 1,
    },
    # the same, but only 1 % of sessions old enough to be deleted permanently
    "few_deletes": {
        "fresh_active": 69,
        "inactive_active": 20,
        "too_old_active": 3,
        "fresh_shared": 2,
        "recent_archived": 3,
        "old_archived": 0.5,
        "old_soft_deleted": 0.5,
        "recent_soft_deleted": 2,
    },
}
HEAVY_OWNER_SESSIONS = 40  # fresh active sessions of each heavy owner (quota 20: 20 archived)
HEAVY_OWNERS_PER_10K = 10
HELD_PER_10K = 10  # sessions held by another operation (locked_by): set aside, not touched
CONFIGURATION = '{"vector_size": 384, "distance": "Cosine"}'


@dataclass
class Seeded:
    sessions: int
    mix: str
    kinds: dict[str, int]
    heavy_owners: int
    held: int
    seconds: float


async def seed(dsn: str, n: int, mix: str, rng_seed: int = 7) -> Seeded:
    """Replace every session with ``n`` rows of the given mix (deterministic per seed)."""
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    shares = MIXES[mix]
    kinds: list[str] = []
    for kind, pct in shares.items():
        kinds += [kind] * round(n * pct / 100)
    kinds = (kinds + ["fresh_active"] * n)[:n]
    rng.shuffle(kinds)
    owners_pool = max(1, n // 10)  # ~10 sessions per ordinary owner: under the quota
    heavy = max(1, n * HEAVY_OWNERS_PER_10K // 10_000)
    heavy_slots = heavy * HEAVY_OWNER_SESSIONS
    held = max(1, n * HELD_PER_10K // 10_000)
    ids: list[uuid.UUID] = []
    names: list[str] = []
    statuses: list[str] = []
    owners: list[str | None] = []
    collections: list[str] = []
    created: list[datetime] = []
    updated: list[datetime] = []
    locked: list[str | None] = []
    for i, kind in enumerate(kinds):
        status, c_days, u_days, _ = KINDS[kind]
        sid = uuid.UUID(int=rng.getrandbits(128), version=4)
        u_ago = rng.uniform(*u_days)
        c_ago = max(rng.uniform(*c_days), u_ago)
        if kind == "fresh_active" and heavy_slots > 0:
            owner: str | None = f"heavy-{heavy_slots % heavy}"
            heavy_slots -= 1
        elif rng.random() < 0.01:
            owner = None
        else:
            owner = f"user-{rng.randrange(owners_pool)}"
        ids.append(sid)
        names.append(f"bench session {i}")
        statuses.append(status)
        owners.append(owner)
        collections.append(f"session_{sid.hex}")
        created.append(now - timedelta(days=c_ago))
        updated.append(now - timedelta(days=u_ago))
        locked.append(None)
    for i in rng.sample(range(n), min(held, n)):
        locked[i] = "bench-held-elsewhere"
    began = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE sessions, retention_archived CASCADE")
        await conn.execute(
            """INSERT INTO sessions (id, name, status, owner_id, qdrant_collection_name,
                                     configuration, created_at, updated_at, locked_by)
               SELECT id, name, status, owner_id, coll, $9::jsonb, created, updated, locked
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::timestamptz[], $7::timestamptz[], $8::text[])
                    AS t(id, name, status, owner_id, coll, created, updated, locked)""",
            ids,
            names,
            statuses,
            owners,
            collections,
            created,
            updated,
            locked,
            CONFIGURATION,
        )
        await conn.execute("VACUUM ANALYZE sessions")
        await conn.execute("VACUUM ANALYZE retention_archived")
    finally:
        await conn.close()
    return Seeded(
        sessions=n,
        mix=mix,
        kinds=dict(Counter(kinds)),
        heavy_owners=heavy,
        held=held,
        seconds=round(time.perf_counter() - began, 3),
    )


@dataclass
class BaselineResult:
    """A sweep without Temporal: the same query pages, the same rules, in one process."""

    kind: str
    sessions_evaluated: int
    archived: int
    deleted: int
    set_aside_locked: int
    seconds: float
    archive_phase_seconds: float = 0.0
    delete_phase_seconds: float = 0.0
    pages: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def sessions_per_second(self) -> float:
        return self.sessions_evaluated / self.seconds if self.seconds else 0.0


async def baseline_evaluate(dsn: str, now: datetime) -> BaselineResult:
    """One evaluation pass, as a dry run does: ``retention_page`` + ``evaluation``."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        repo = SessionRepository(pool)
        op = f"bench-baseline-{uuid.uuid4().hex}"
        began = time.perf_counter()
        after: str | None = None
        processed = archive = delete = locked = pages = 0
        while True:
            page = await repo.retention_page(op, after, PAGE_SIZE)
            result = evaluation(page, RULES, now)
            if result.processed == 0:
                break
            pages += 1
            processed += result.processed
            archive += len(result.archive)
            delete += len(result.delete)
            locked += len(result.locked_archive) + len(result.locked_delete)
            after = result.last_id
        seconds = time.perf_counter() - began
    finally:
        await pool.close()
    return BaselineResult(
        kind="evaluate only (dry)",
        sessions_evaluated=processed,
        archived=archive,
        deleted=delete,
        set_aside_locked=locked,
        seconds=seconds,
        pages=pages,
    )


async def baseline_sweep(dsn: str, now: datetime) -> BaselineResult:
    """What a real run does, minus Temporal and Qdrant: pass one evaluates and archives
    each page (``retention_archive``); pass two evaluates again and deletes each selected
    session as DeleteWorkflow would (``lock`` then ``delete_held``), in groups of
    ``DELETE_CONCURRENCY`` awaited together. Changes the rows: reseed afterwards."""
    pool = await create_pool(dsn, min_size=1, max_size=DELETE_CONCURRENCY + 2)
    try:
        repo = SessionRepository(pool)
        op = f"bench-baseline-{uuid.uuid4().hex}"
        began = time.perf_counter()
        after: str | None = None
        processed = archived = deleted = locked = pages = 0
        while True:
            result = evaluation(await repo.retention_page(op, after, PAGE_SIZE), RULES, now)
            if result.processed == 0:
                break
            pages += 1
            processed += result.processed
            locked += len(result.locked_archive)
            if result.archive:
                archived += await repo.retention_archive(op, result.archive)
            after = result.last_id
        archive_done = time.perf_counter()

        async def delete_one(sid: str) -> None:
            holder = f"delete-{uuid.UUID(sid).hex}"
            await repo.lock(holder, [sid], allow_deleted=True)
            await repo.delete_held(holder, sid)

        after = None
        while True:
            result = evaluation(await repo.retention_page(op, after, PAGE_SIZE), RULES, now)
            if result.processed == 0:
                break
            pages += 1
            locked += len(result.locked_delete)
            for start in range(0, len(result.delete), DELETE_CONCURRENCY):
                group = result.delete[start : start + DELETE_CONCURRENCY]
                await asyncio.gather(*(delete_one(sid) for sid in group))
                deleted += len(group)
            after = result.last_id
        await repo.retention_forget(op)
        end = time.perf_counter()
    finally:
        await pool.close()
    return BaselineResult(
        kind="archive + delete (real), no Temporal/Qdrant",
        sessions_evaluated=processed,
        archived=archived,
        deleted=deleted,
        set_aside_locked=locked,
        seconds=end - began,
        archive_phase_seconds=archive_done - began,
        delete_phase_seconds=end - archive_done,
        pages=pages,
    )


async def count_by_status(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM sessions GROUP BY status")
    finally:
        await conn.close()
    return {r["status"]: int(r["n"]) for r in rows}
