"""The Postgres side opened once: the pool and a repository per concern over it.
The runtime (and so the tests) holds one; services and activities
take the repositories they use from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from session_service.stores.cold_marks import ColdMarks
from session_service.stores.collaborator_rows import CollaboratorRows
from session_service.stores.export_rows import ExportRows
from session_service.stores.finish_rows import FinishRows
from session_service.stores.idempotency_keys import IdempotencyKeys
from session_service.stores.lock_rows import LockRows
from session_service.stores.operation_rows import OperationStore
from session_service.stores.retention_rows import RetentionRows
from session_service.stores.session_rows import SessionRows


@dataclass
class Postgres:
    pool: asyncpg.Pool
    sessions: SessionRows = field(init=False)
    collaborators: CollaboratorRows = field(init=False)
    locks: LockRows = field(init=False)
    finishes: FinishRows = field(init=False)
    keys: IdempotencyKeys = field(init=False)
    retention: RetentionRows = field(init=False)
    exports: ExportRows = field(init=False)
    cold: ColdMarks = field(init=False)
    operations: OperationStore = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = SessionRows(self.pool)
        self.collaborators = CollaboratorRows(self.sessions)
        self.locks = LockRows(self.pool)
        self.finishes = FinishRows(self.pool)
        self.keys = IdempotencyKeys(self.pool)
        self.retention = RetentionRows(self.pool)
        self.exports = ExportRows(self.pool)
        self.cold = ColdMarks(self.pool)
        self.operations = OperationStore(self.pool)

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")
