"""Steps of offload and reload (API.md section G): the artifact is written and read by
the export and import steps (``TransferSteps``); these add the holding of the session,
the read-back checks, and the storage marks in Postgres."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError

from session_service.domain import export_format as fmt
from session_service.domain.models import ArtifactRef, Storage
from session_service.domain.naming import part_key as part_key
from session_service.domain.naming import reload_workflow_id as reload_workflow_id
from session_service.temporal import registry, steps
from session_service.temporal.activities.errors import business_errors
from session_service.temporal.activities.transfer_steps import TransferSteps, in_thread
from session_service.temporal.contracts import (
    ArtifactCheck,
    EnsureLiveInput,
    ErrorType,
    LockInput,
    MarkLiveInput,
    MarkOffloadedInput,
    OffloadLockResult,
    ReloadInput,
    VerifyOffloadInput,
    VerifyReloadInput,
    WriteOffloadInput,
)
from session_service.temporal.heartbeat import heartbeat_interval
from session_service.temporal.steps import implements

MISMATCH = "ArtifactMismatch"  # a read-back that disagrees: the offload fails and is undone


class ColdSteps:
    def __init__(self, transfer: TransferSteps, *, keep_artifact: bool = False) -> None:
        self.transfer = transfer
        self.rows = transfer.rows
        self.locks = transfer.locks
        self.cold = transfer.cold
        self.vectors = transfer.vectors
        self.store = transfer.store
        self.keep_artifact = keep_artifact

    @implements(steps.HOLD_FOR_STORAGE)
    async def hold_for_storage(self, inp: LockInput) -> OffloadLockResult:
        """Hold the one session (409 when another operation does) and say where its points
        are; a repeat by the same operation is a no-op."""
        with business_errors():
            [record] = await self.locks.lock(
                inp.operation_id,
                inp.session_ids,
                allow_deleted=inp.allow_deleted,
                no_exports=inp.no_exports,
            )
        ref = record.artifact
        return OffloadLockResult(
            session_id=record.id,
            collection=record.qdrant_collection_name,
            storage=record.storage.value,
            vector_size=record.configuration.vector_size,
            distance=record.configuration.distance.value,
            artifact_key=ref.key if ref else None,
            artifact_points=ref.points if ref else 0,
            artifact_sha256=ref.sha256 if ref else None,
        )

    @implements(steps.WRITE_OFFLOAD)
    async def write_offload(self, inp: WriteOffloadInput) -> ArtifactCheck:
        """Write the points to ``<key>.part`` with the export's writer (resuming from its
        checkpoint), then give the file its name; a retry after that reads it back."""
        final = inp.artifact_key
        if self.store.size(final) is None:
            with business_errors():
                session = (await self.rows.get(inp.session_id)).public()
            size, points, sha, _ = await self.transfer.write_artifact(
                part_key(final), session, inp.batch_size
            )
            await in_thread(self.store.publish, part_key(final), final)
            return ArtifactCheck(key=final, points=points, sha256=sha, size_bytes=size)
        return await self._read_back(final)

    async def _read_back(self, key: str) -> ArtifactCheck:
        """Read the whole artifact: every line, its count and SHA-256 against the trailer."""
        stop = threading.Event()

        def check() -> fmt.Header:
            with self.store.open_read(key) as raw:
                return fmt.validate(raw, self.transfer.limits, stop)

        try:
            header = await in_thread(check)
        except fmt.InvalidArtifact as exc:
            raise ApplicationError(
                f"the artifact {key} does not read back: {exc}", type=MISMATCH, non_retryable=True
            ) from exc
        finally:
            stop.set()
        return ArtifactCheck(
            key=key,
            points=header.points,
            sha256=header.sha256,
            size_bytes=self.store.size(key) or 0,
        )

    @implements(steps.VERIFY_OFFLOAD)
    async def verify_offload(self, inp: VerifyOffloadInput) -> ArtifactCheck:
        """Read the artifact back: its count and SHA-256 must be what was written, and the
        count what the live collection holds (the session is held: nobody writes)."""
        back = await self._read_back(inp.written.key)
        live = await self.vectors.count(inp.collection)
        if back.points != inp.written.points or back.sha256 != inp.written.sha256:
            raise ApplicationError(
                f"the artifact reads back {back.points} points / {back.sha256}; "
                f"{inp.written.points} / {inp.written.sha256} were written",
                type=MISMATCH,
                non_retryable=True,
            )
        if back.points != live:
            raise ApplicationError(
                f"the artifact holds {back.points} points; the collection holds {live}",
                type=MISMATCH,
                non_retryable=True,
            )
        return back

    @implements(steps.MARK_OFFLOADED)
    async def mark_offloaded(self, inp: MarkOffloadedInput) -> None:
        a = inp.artifact
        await self.cold.mark_offloaded(
            inp.operation_id,
            inp.session_id,
            ArtifactRef(key=a.key, points=a.points, sha256=a.sha256, size_bytes=a.size_bytes),
        )

    @implements(steps.MARK_LIVE)
    async def mark_live(self, inp: MarkLiveInput) -> None:
        await self.cold.mark_live(inp.operation_id, inp.session_id, release=inp.release)

    @implements(steps.CREATE_COLLECTION)
    async def create_collection(self, inp: OffloadLockResult) -> None:
        await self.vectors.ensure_collection(inp.collection, inp.vector_size, inp.distance)

    @implements(steps.VERIFY_RELOAD)
    async def verify_reload(self, inp: VerifyReloadInput) -> int:
        """The recreated collection must hold exactly the artifact's points."""
        live = await self.vectors.count(inp.collection)
        if live != inp.points:
            raise ApplicationError(
                f"the reloaded collection holds {live} points; the artifact {inp.points}",
                type=ErrorType.invalid.value,
                non_retryable=True,
            )
        return live

    @implements(steps.ENSURE_LIVE)
    async def ensure_live(self, inp: EnsureLiveInput) -> list[str]:
        """Bring offloaded sessions back before an operation that needs their points (a
        merge or a split): start, or join, each one's reload and wait for it. Returns the
        ids that were reloaded. A reload's failure fails this step with its error type."""
        reloaded = []
        for record in await self.rows.get_existing(inp.session_ids):
            if record.storage is not Storage.offloaded:
                continue
            await self._reload(record.id, record.owner_id, inp)
            reloaded.append(record.id)
        return reloaded

    async def _reload(self, session_id: str, owner_id: str | None, inp: EnsureLiveInput) -> None:
        client = activity.client()
        info = activity.info()
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(registry.SESSION_IDS, [session_id]),
            SearchAttributePair(registry.OPERATION_KIND, registry.RELOAD.kind.value),
        ]
        if owner_id:
            pairs.append(SearchAttributePair(registry.OWNER_ID, owner_id))
        handle = await client.start_workflow(
            registry.RELOAD.name,
            ReloadInput(
                session_id=session_id, keep_artifact=self.keep_artifact, options=inp.options
            ),
            id=reload_workflow_id(session_id),
            task_queue=info.task_queue,
            search_attributes=TypedSearchAttributes(pairs),
            memo={
                "session_ids": [session_id],
                "started_by": None,
                "cancel_permission": "admin",
                "cancel_ids": [session_id],
            },
            static_summary=f"reload session {session_id} for {info.workflow_id}",
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        waiter = asyncio.ensure_future(handle.result())
        interval = heartbeat_interval(info.heartbeat_timeout)
        try:
            while not (await asyncio.wait({waiter}, timeout=interval))[0]:
                activity.heartbeat()
            waiter.result()
        except WorkflowFailureError as exc:
            cause: Any = exc.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = getattr(cause, "cause", None)
            raise ApplicationError(
                f"reloading session {session_id} failed: {getattr(cause, 'message', exc)}",
                type=getattr(cause, "type", None) or ErrorType.conflict.value,
                non_retryable=True,
            ) from exc
        finally:
            waiter.cancel()
