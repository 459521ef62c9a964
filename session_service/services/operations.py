"""Operations: starting, awaiting, describing, listing and cancelling workflows.

The operation id is the Temporal workflow id. Temporal runs an operation; the
``operations`` table records it (stores/operations_store.py): the API writes the row
when it starts the workflow, the workflow's own activities when it starts and ends.
Listing reads the table (one query) and asks Temporal only about the running ones;
a finished operation is answered from its row, which outlives Temporal's retention.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    FailureError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from session_service.domain.access import Actor, rank
from session_service.domain.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Locked,
    NotFound,
    Unprocessable,
)
from session_service.domain.models import (
    MAX_METADATA_BYTES,
    PERMISSION_RANK,
    MergeRequest,
    Operation,
    OperationError,
    OperationStatus,
    Permission,
    SessionRecord,
    SessionStatus,
    SplitRequest,
)
from session_service.domain.operation_records import OperationEnd
from session_service.obs import logs
from session_service.obs.metrics import OPERATIONS_STARTED
from session_service.services.sessions import SessionService, request_hash
from session_service.settings import Settings
from session_service.stores.operation_rows import (
    OperationCursor,
    OperationFilter,
    OperationRow,
)
from session_service.temporal import registry
from session_service.temporal.contracts import (
    DeleteInput,
    MergeInput,
    OperationKind,
    Progress,
    SplitInput,
    SplitPart,
    StepOptions,
)
from session_service.temporal.registry import OPERATION_KIND, OWNER_ID, SESSION_IDS

log = logs.get(__name__)

_STATUS = {
    WorkflowExecutionStatus.RUNNING: OperationStatus.running,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: OperationStatus.running,
    WorkflowExecutionStatus.COMPLETED: OperationStatus.succeeded,
    WorkflowExecutionStatus.CANCELED: OperationStatus.cancelled,
}
# How many running operations of a listed page are asked about at once (describe, query).
_LIVE_CONCURRENCY = 16
# Reuse policies under which a finished operation's id may run again (a new row's life).
_RESTARTABLE = {
    WorkflowIDReusePolicy.ALLOW_DUPLICATE: {"succeeded", "failed", "cancelled"},
    WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY: {"failed", "cancelled"},
}
# Temporal refuses a search attribute value over 2,048 bytes (about 52 full ids).
_SEARCH_ATTRIBUTE_BUDGET = 1800


class OperationFailed(Exception):
    """An awaited operation ended without a result; carries what the API should answer."""

    def __init__(self, operation_id: str, status: OperationStatus, error: OperationError) -> None:
        super().__init__(error.message)
        self.operation_id = operation_id
        self.status = status
        self.error = error


@dataclass(frozen=True)
class Started:
    operation_id: str
    kind: OperationKind
    handle: WorkflowHandle[Any, Any]


@dataclass(frozen=True)
class Holders:
    """Who an operation belongs to, from its memo: its starter, and the permission (on
    ``cancel_ids``) that starting it needed; no permission: only its starter may cancel."""

    started_by: str | None
    cancel_permission: Permission | None
    cancel_ids: list[str]


def _check_carried_metadata(what: str, metadata: dict[str, Any]) -> None:
    """422 up front when a new session's metadata (the source's under the request's) would
    pass the limit, rather than a failure at the operation's last step."""
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise Unprocessable(
            f"{what} would carry {size} bytes of metadata (the source's with the request's); "
            f"the limit is {MAX_METADATA_BYTES}: send less metadata"
        )


def _reloading(session: SessionRecord) -> bool:
    """Held by its own reload (section G): a merge or split joins it (its first step)."""
    return session.locked_by == f"reload-{uuid.UUID(session.id).hex}"


def compact_id(session_id: str) -> str:
    """The first 12 hex digits of a session id: how SessionIds names it in large operations."""
    try:
        return uuid.UUID(session_id).hex[:12]
    except ValueError:
        return session_id[:12]


def search_ids(session_ids: list[str]) -> list[str]:
    """The ``SessionIds`` search attribute: every id when they fit in Temporal's limit, else
    each id's compact form (as many as fit); the memo keeps the full list for the API."""
    if len(json.dumps(session_ids)) <= _SEARCH_ATTRIBUTE_BUDGET:
        return session_ids
    out: list[str] = []
    for sid in session_ids:
        if len(json.dumps([*out, compact_id(sid)])) > _SEARCH_ATTRIBUTE_BUDGET:
            break
        out.append(compact_id(sid))
    return out


def _error_of(exc: BaseException) -> OperationError:
    """The first typed ApplicationError in the cause chain, else the outermost message."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ApplicationError) and seen.type:
            return OperationError(type=seen.type, message=seen.message)
        if isinstance(seen, CancelledError):
            return OperationError(type="Cancelled", message="the operation was cancelled")
        seen = seen.__cause__ or getattr(seen, "cause", None)
    message = exc.message if isinstance(exc, FailureError) else str(exc)
    return OperationError(type="Internal", message=message)


class OperationService:
    def __init__(self, client: Client, settings: Settings, sessions: SessionService) -> None:
        self.client = client
        self.settings = settings
        self.sessions = sessions
        self.records = sessions.pg.operations
        self.keys = sessions.pg.keys
        self.session_rows = sessions.rows

    def options(self) -> StepOptions:
        s = self.settings
        return StepOptions(
            batch_size=s.op_batch_size,
            export_batch_size=s.export_batch_size,
            batches_per_call=s.op_batches_per_call,
            heartbeat_timeout_seconds=s.op_heartbeat_timeout_seconds,
            maximum_attempts=s.op_maximum_attempts,
        )

    # starting

    async def _start(
        self,
        kind: OperationKind,
        arg: BaseModel,
        *,
        actor: Actor,
        session_ids: list[str],
        owner_id: str | None,
        summary: str,
        workflow_id: str,
        cancel_ids: list[str] | None = None,
        cancel_permission: Permission | None = None,
        reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.REJECT_DUPLICATE,
    ) -> Started:
        spec = registry.operation(kind)
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(SESSION_IDS, search_ids(session_ids)),
            SearchAttributePair(OPERATION_KIND, kind.value),
        ]
        memo_permission: str | None = getattr(cancel_permission or spec.cancel_needs, "value", None)
        memo_cancel_ids = session_ids if cancel_ids is None else cancel_ids
        memo = {
            "session_ids": session_ids,
            "started_by": actor.user_id,
            "cancel_permission": memo_permission,
            "cancel_ids": memo_cancel_ids,
        }
        if owner_id:
            pairs.append(SearchAttributePair(OWNER_ID, owner_id))
        # the row first: it exists even if no worker ever runs the workflow
        earlier = await self.records.begin(
            operation_id=workflow_id,
            kind=kind.value,
            session_ids=session_ids,
            owner_id=owner_id,
            started_by=actor.user_id,
            cancel_permission=memo_permission,
            cancel_ids=memo_cancel_ids,
            summary=summary,
            restart_from=_RESTARTABLE.get(reuse, set()),
        )
        if earlier is not None and earlier.done:
            # that operation already ran (its Temporal record may be purged): never again
            return Started(workflow_id, kind, self.client.get_workflow_handle(workflow_id))
        try:
            handle: WorkflowHandle[Any, Any] = await self.client.start_workflow(
                spec.name,
                arg,
                id=workflow_id,
                task_queue=self.settings.temporal_task_queue,
                search_attributes=TypedSearchAttributes(pairs),
                memo=memo,
                static_summary=summary,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=reuse,
            )
        except WorkflowAlreadyStartedError:  # the same id already ran: that is the operation
            handle = self.client.get_workflow_handle(workflow_id)
        except BaseException:
            if earlier is None:  # nothing runs under the row just written
                await self.records.forget(workflow_id)
            raise
        else:
            OPERATIONS_STARTED.labels(kind.value).inc()
            log.info(
                "operation started",
                operation_id=workflow_id,
                kind=kind.value,
                session_ids=session_ids,
                summary=summary,
            )
        return Started(workflow_id, kind, handle)

    async def _existing(
        self, kind: OperationKind, actor: Actor, key: str | None, body: Any
    ) -> tuple[str, str | None]:
        """The workflow id to use: a fresh one, or the one an Idempotency-Key already names."""
        if key is None:
            return f"{kind.value}-{uuid.uuid4().hex}", None
        digest = request_hash(body, actor)
        found = await self.keys.find(actor.key_scope(f"op:{kind.value}"), key)
        if found is not None:
            if found.request_hash != digest:
                raise Unprocessable(
                    f"Idempotency-Key {key!r} was already used with a different request; "
                    "use a new key for a new request"
                )
            return found.resource_id, digest
        # users and key-less services keep the ids that keyed operations always had
        who = actor.caller if actor.trusted and actor.credential else actor.user_id
        hashed = hashlib.sha256(f"{who}\0{key}".encode()).hexdigest()[:32]
        return f"{kind.value}-{hashed}", digest

    async def _claim(
        self,
        kind: OperationKind,
        actor: Actor,
        key: str | None,
        digest: str | None,
        workflow_id: str,
    ) -> str:
        if key is None or digest is None:
            return workflow_id
        scope = actor.key_scope(f"op:{kind.value}")
        return await self.keys.claim(scope, key, digest, workflow_id)

    async def start_keyed(
        self,
        kind: OperationKind,
        actor: Actor,
        key: str | None,
        body: Any,
        arg: BaseModel,
        *,
        session_ids: list[str],
        owner_id: str | None,
        summary: str,
    ) -> Started:
        """Start an operation that needs no checks up front, honouring an Idempotency-Key."""
        workflow_id, digest = await self._existing(kind, actor, key, body)
        workflow_id = await self._claim(kind, actor, key, digest, workflow_id)
        return await self._start(
            kind,
            arg,
            actor=actor,
            session_ids=session_ids,
            owner_id=owner_id,
            summary=summary,
            workflow_id=workflow_id,
        )

    async def find_keyed(
        self, kind: OperationKind, actor: Actor, key: str | None, body: Any
    ) -> Started | None:
        """The operation an Idempotency-Key already started, if any (422 for another body)."""
        if key is None:
            return None
        workflow_id, digest = await self._existing(kind, actor, key, body)
        if digest is not None and await self._known(workflow_id):
            return Started(workflow_id, kind, self.client.get_workflow_handle(workflow_id))
        return None

    async def start_merge(self, actor: Actor, body: MergeRequest, key: str | None) -> Started:
        kind = OperationKind.MERGE
        workflow_id, digest = await self._existing(kind, actor, key, body.model_dump(mode="json"))
        if digest is not None and await self._known(workflow_id):
            return Started(workflow_id, kind, self.client.get_workflow_handle(workflow_id))
        ids = list(dict.fromkeys(body.source_session_ids))
        if len(ids) < 2:
            raise BadRequest("source_session_ids must name at least two different sessions")
        # archiving is the act of an admin (API.md E); merging needs write
        needed = Permission.admin if body.archive_sources else Permission.write
        sources = [await self.sessions.load(actor, sid, needed) for sid in ids]
        for s in sources:
            if s.locked_by is not None and not _reloading(s):
                raise Locked(s.id, s.locked_by)
            if s.status is SessionStatus.deleted:
                raise Conflict(f"session {s.id} is deleted; restore it before merging")
        params = {(s.configuration.vector_size, s.configuration.distance) for s in sources}
        if len(params) > 1:
            raise Conflict(
                "sources must share vector parameters; they have "
                + ", ".join(
                    f"{s.id}: {s.configuration.vector_size}/{s.configuration.distance.value}"
                    for s in sources
                )
            )
        _check_carried_metadata("the merged session", {**sources[0].metadata, **body.metadata})
        owner = actor.user_id or body.owner_id or sources[0].owner_id
        name = body.target_name or f"Merged: {', '.join(s.name for s in sources)}"[:200]
        target_id = str(uuid.uuid4())
        workflow_id = await self._claim(kind, actor, key, digest, workflow_id)
        arg = MergeInput(
            source_ids=[s.id for s in sources],
            target_id=target_id,
            target_name=name,
            target_description=(
                "Merged session" if body.target_description is None else body.target_description
            ),
            owner_id=owner,
            tags=body.tags,
            metadata=body.metadata,
            archive_sources=body.archive_sources,
            options=self.options(),
        )
        return await self._start(
            kind,
            arg,
            actor=actor,
            session_ids=[*arg.source_ids, target_id],
            cancel_ids=arg.source_ids,
            cancel_permission=needed,
            owner_id=owner,
            summary=f"merge {len(ids)} sessions into {name!r}",
            workflow_id=workflow_id,
        )

    async def start_split(
        self, actor: Actor, session_id: str, body: SplitRequest, key: str | None
    ) -> Started:
        kind = OperationKind.SPLIT
        workflow_id, digest = await self._existing(
            kind, actor, key, [session_id, body.model_dump(mode="json")]
        )
        if digest is not None and await self._known(workflow_id):
            return Started(workflow_id, kind, self.client.get_workflow_handle(workflow_id))
        source = await self.sessions.load(actor, session_id, Permission.admin)
        if source.locked_by is not None and not _reloading(source):
            raise Locked(source.id, source.locked_by)
        if source.status is SessionStatus.deleted:
            raise Conflict(f"session {source.id} is deleted; restore it before splitting")
        for n, p in enumerate(body.parts):
            _check_carried_metadata(f"parts[{n}]", {**source.metadata, **p.metadata})
        workflow_id = await self._claim(kind, actor, key, digest, workflow_id)
        parts = [
            SplitPart(
                session_id=str(uuid.uuid4()),
                name=p.name,
                point_ids=p.point_ids,
                description=f"Split from {source.id}" if p.description is None else p.description,
                tags=p.tags,
                metadata=p.metadata,
            )
            for p in body.parts
        ]
        arg = SplitInput(
            source_id=source.id,
            parts=parts,
            archive_original=body.archive_original,
            remove_points=body.remove_points,
            options=self.options(),
        )
        return await self._start(
            kind,
            arg,
            actor=actor,
            session_ids=[source.id, *(p.session_id for p in parts)],
            cancel_ids=[source.id],
            owner_id=source.owner_id,
            summary=f"split {source.name!r} into {len(parts)} parts",
            workflow_id=workflow_id,
        )

    async def start_delete(self, actor: Actor, session_id: str) -> Started:
        """One delete per session at a time: the workflow id is derived from the session."""
        session = await self.sessions.load(actor, session_id, Permission.admin)
        workflow_id = f"delete-{uuid.UUID(session.id).hex}"
        if session.locked_by is not None and session.locked_by != workflow_id:
            raise Locked(session.id, session.locked_by)
        return await self._start(
            OperationKind.DELETE,
            DeleteInput(session_id=session.id, options=self.options()),
            actor=actor,
            session_ids=[session.id],
            owner_id=session.owner_id,
            summary=f"permanently delete {session.name!r}",
            workflow_id=workflow_id,
            # a failed or cancelled delete may be asked again; a finished one left no session
            reuse=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )

    async def _known(self, workflow_id: str) -> bool:
        """Whether the operation exists: its row (which outlives Temporal's retention),
        else Temporal (operations started before the record was kept)."""
        if await self.records.get(workflow_id) is not None:
            return True
        return await self._known_to_temporal(workflow_id)

    async def _known_to_temporal(self, workflow_id: str) -> bool:
        try:
            await self.client.get_workflow_handle(workflow_id).describe()
            return True
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise

    # awaiting

    async def wait(self, started: Started, seconds: float) -> Any | None:
        """The final body if the operation ends within ``seconds``; None if still running.

        Raises OperationFailed when it ended without a result.
        """
        result_type = registry.operation(started.kind).result
        handle = self.client.get_workflow_handle(started.operation_id, result_type=result_type)
        row = await self.records.get(started.operation_id)
        if row is not None and row.done:  # ended: answered from its record, purged or not
            if row.status == OperationStatus.succeeded.value:
                return row.result
            op = self._from_row(row)
            assert op.error is not None
            raise OperationFailed(started.operation_id, op.status, op.error)
        if seconds <= 0:
            return None
        try:
            result = await asyncio.wait_for(handle.result(), timeout=seconds)
        except TimeoutError:
            return None
        except WorkflowFailureError as exc:
            status = (
                OperationStatus.cancelled
                if isinstance(exc.cause, CancelledError)
                else OperationStatus.failed
            )
            raise OperationFailed(started.operation_id, status, _error_of(exc)) from exc
        return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

    # reading

    async def get(self, operation_id: str) -> Operation:
        op, _ = await self._read(operation_id)
        return op

    async def _read(self, operation_id: str) -> tuple[Operation, Holders]:
        """A finished operation from its row; a running one (or one without a row) from
        Temporal, and from the row if Temporal no longer knows it."""
        row = await self.records.get(operation_id)
        if row is not None and row.done:
            return self._from_row(row), _holders_of(row)
        try:
            return await self._read_temporal(operation_id)
        except NotFound:
            if row is None:
                raise
            return self._from_row(row), _holders_of(row)

    def _links(self, operation_id: str) -> dict[str, str]:
        ui = self.settings.temporal_ui_url.rstrip("/")
        ns = self.settings.temporal_namespace
        return {
            "self": f"/operations/{operation_id}",
            "temporal_ui": f"{ui}/namespaces/{ns}/workflows/{operation_id}",
        }

    def _from_row(self, row: OperationRow, progress: dict[str, Any] | None = None) -> Operation:
        status = OperationStatus(row.status)
        error = (
            None
            if row.error_type is None
            else OperationError(type=row.error_type, message=row.error_message or "")
        )
        return Operation(
            id=row.id,
            kind=row.kind,
            status=status,
            done=row.done,
            session_ids=row.session_ids,
            progress=progress or row.progress or {"phase": status.value},
            result=row.result if status is OperationStatus.succeeded else None,
            error=error,
            created_at=row.created_at,
            finished_at=row.finished_at,
            summary=row.summary,
            owner_id=row.owner_id,
            links=self._links(row.id),
        )

    async def _read_temporal(self, operation_id: str) -> tuple[Operation, Holders]:
        handle = self.client.get_workflow_handle(operation_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise NotFound(f"operation {operation_id} not found") from exc
            raise
        kind = registry.kind_of(desc.workflow_type)
        if kind is None:
            raise NotFound(f"operation {operation_id} not found")
        result_type = registry.operation(kind).result
        status = _STATUS.get(desc.status or WorkflowExecutionStatus.RUNNING, OperationStatus.failed)
        result: Any = None
        error: OperationError | None = None
        if status is OperationStatus.succeeded:
            value = await self.client.get_workflow_handle(
                operation_id, result_type=result_type
            ).result()
            result = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        elif status is not OperationStatus.running:
            try:
                await handle.result()
            except WorkflowFailureError as exc:
                error = _error_of(exc)
            except Exception as exc:  # terminated or timed out: no failure to read
                error = OperationError(type="Internal", message=str(exc))
        progress = await self._progress(handle, status)
        attrs = desc.typed_search_attributes
        memo = await desc.memo()
        session_ids = list(memo.get("session_ids") or attrs.get(SESSION_IDS) or [])
        op = Operation(
            id=operation_id,
            kind=kind.value,
            status=status,
            done=status is not OperationStatus.running,
            session_ids=session_ids,
            progress=progress,
            result=result,
            error=error,
            created_at=await self._created_at(desc),
            finished_at=desc.close_time,
            summary=await desc.static_summary(),
            owner_id=attrs.get(OWNER_ID),
            links=self._links(operation_id),
        )
        if "session_ids" in memo:
            needs = memo.get("cancel_permission")
            holders = Holders(
                started_by=memo.get("started_by"),
                cancel_permission=Permission(needs) if needs else None,
                cancel_ids=list(memo.get("cancel_ids") or []),
            )
        else:  # started before operations kept a memo
            needs = registry.operation(kind).cancel_needs
            holders = Holders(
                started_by=op.owner_id if needs is None else None,
                cancel_permission=needs,
                cancel_ids=session_ids,
            )
        return op, holders

    async def _created_at(self, desc: WorkflowExecutionDescription) -> datetime:
        """When the operation began: its first run's start. A sweep continues-as-new, and
        describe() answers for the latest run only."""
        first = desc.raw_description.workflow_execution_info.first_run_id
        if not first or first == desc.run_id:
            return desc.start_time
        try:
            earliest = await self.client.get_workflow_handle(desc.id, run_id=first).describe()
        except RPCError as exc:  # the first run's history was already deleted (retention)
            if exc.status == RPCStatusCode.NOT_FOUND:
                return desc.start_time
            raise
        return earliest.start_time

    async def _progress(
        self, handle: WorkflowHandle[Any, Any], status: OperationStatus
    ) -> dict[str, Any] | None:
        try:
            value = await asyncio.wait_for(
                handle.query("progress", result_type=Progress), timeout=5
            )
        except Exception:  # noqa: BLE001 - no worker to answer: progress is optional
            return {"phase": status.value}
        dump: dict[str, Any] = value.model_dump(mode="json")
        return dump

    async def visible(self, actor: Actor, op: Operation, holders: Holders) -> bool:
        """API.md E: a user sees an operation only if they can read every session it names
        that exists; one naming no existing session, only its starter. Trusted: all."""
        if actor.trusted:
            return True
        existing = await self.session_rows.get_existing(op.session_ids)
        if not existing:
            return holders.started_by is not None and holders.started_by == actor.user_id
        return all(rank(s, actor) > 0 for s in existing)

    async def get_for(self, actor: Actor, operation_id: str) -> Operation:
        op, _ = await self._get_visible(actor, operation_id)
        return op

    async def _get_visible(self, actor: Actor, operation_id: str) -> tuple[Operation, Holders]:
        op, holders = await self._read(operation_id)
        if not await self.visible(actor, op, holders):
            raise NotFound(f"operation {operation_id} not found")
        return op, holders

    async def list_for(
        self,
        actor: Actor,
        *,
        session_id: str | None,
        kind: OperationKind | None,
        status: OperationStatus | None,
        limit: int,
        page_token: str | None = None,
    ) -> tuple[list[Operation], str | None]:
        """A page of operations, newest first, filtered and limited to what the actor may
        see, all in one SQL query; then live progress of the running ones (at most two
        Temporal calls each, ``_LIVE_CONCURRENCY`` at once). Returns the page and the
        next page's token (None on the last page)."""
        after = OperationCursor.decode(page_token) if page_token else None
        sid: uuid.UUID | None = None
        if session_id is not None:
            try:
                sid = uuid.UUID(session_id)
            except ValueError:
                return [], None
        flt = OperationFilter(
            kind=kind.value if kind else None,
            status=status.value if status else None,
            session_id=sid,
            visible_to=None if actor.trusted else actor.user_id,
        )
        rows = await self.records.search(flt, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        gate = asyncio.Semaphore(_LIVE_CONCURRENCY)

        async def shown(row: OperationRow) -> Operation:
            if row.done:
                return self._from_row(row)
            async with gate:
                return await self._live(row)

        ops = list(await asyncio.gather(*(shown(r) for r in rows)))
        token = OperationCursor(rows[-1].created_at, rows[-1].id).encode() if more else None
        return ops, token

    async def _live(self, row: OperationRow) -> Operation:
        """A running row with its live progress; if Temporal says the run ended without
        its end write (terminated, timed out), the row is brought up to date."""
        handle = self.client.get_workflow_handle(row.id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return self._from_row(row)  # not started yet, or not visible yet
            raise
        if desc.status in (None, *(s for s, v in _STATUS.items() if v is OperationStatus.running)):
            return self._from_row(row, await self._progress(handle, OperationStatus.running))
        op, _ = await self._read_temporal(row.id)
        await self.records.ended(
            OperationEnd(
                operation_id=row.id,
                kind=row.kind,
                status=op.status.value,
                run_id=desc.raw_description.workflow_execution_info.first_run_id or None,
                session_ids=row.session_ids,
                progress=op.progress,
                result=op.result,
                error_type=op.error.type if op.error else None,
                error_message=op.error.message if op.error else None,
            )
        )
        return op.model_copy(update={"created_at": row.created_at, "summary": row.summary})

    async def cancel(self, actor: Actor, operation_id: str) -> Operation:
        """Cancelling needs the permission that starting the operation needed (API.md E)."""
        op, holders = await self._get_visible(actor, operation_id)
        if not actor.trusted:
            needed = holders.cancel_permission
            if needed is None:
                if holders.started_by != actor.user_id:
                    raise Forbidden(
                        f"only the user who started {operation_id} or a trusted service "
                        "may cancel it"
                    )
            else:
                for session in await self.session_rows.get_existing(holders.cancel_ids):
                    if rank(session, actor) < PERMISSION_RANK[needed]:
                        raise Forbidden(
                            f"cancelling {operation_id} needs {needed.value!r} permission on "
                            f"session {session.id}, as starting it did"
                        )
        if op.done:
            raise Conflict(f"operation {operation_id} already ended ({op.status.value})")
        await self.client.get_workflow_handle(operation_id).cancel()
        return op


def _holders_of(row: OperationRow) -> Holders:
    return Holders(
        started_by=row.started_by,
        cancel_permission=Permission(row.cancel_permission) if row.cancel_permission else None,
        cancel_ids=row.cancel_ids,
    )


__all__ = ["OperationFailed", "OperationService", "Started", "timedelta"]
