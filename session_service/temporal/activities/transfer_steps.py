"""Export and import steps: artifacts are written and read here, in batches, with
heartbeated checkpoints; workflows only pass keys and counts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar

from isal import igzip
from temporalio import activity
from temporalio.exceptions import ApplicationError

from session_service.domain import export_format as fmt
from session_service.domain.errors import Offloaded
from session_service.domain.models import SessionModel, Storage
from session_service.obs import logs
from session_service.stores.artifacts import ArtifactStore
from session_service.stores.database import Postgres
from session_service.stores.vector_store import PointRows, PointTuple, VectorStore
from session_service.temporal import steps
from session_service.temporal.activities.errors import business_errors
from session_service.temporal.activities.meter import points_moved
from session_service.temporal.contracts import (
    ErrorType,
    ExportCheckpoint,
    ExportRecordInput,
    ExportResult,
    FinishImportInput,
    ImportHeader,
    ImportPointsInput,
    WriteExportInput,
)
from session_service.temporal.heartbeat import heartbeat_interval
from session_service.temporal.steps import implements

T = TypeVar("T")
log = logs.get(__name__)


async def beating(job: Future[T], details: tuple[Any, ...] = ()) -> T:
    """Wait for ``job`` (on a thread) and heartbeat ``details`` meanwhile.

    A single thread call can outlast the heartbeat timeout (a big artifact read whole),
    and a beat without the checkpoint would erase it, so the caller passes it again.
    Cancelling the wait leaves the thread running: callers that share a file with it
    wait for ``job`` before closing the file.
    """
    waiter = asyncio.wrap_future(job)
    interval = heartbeat_interval(activity.info().heartbeat_timeout)
    while True:
        done, _ = await asyncio.wait({waiter}, timeout=interval)
        if done:
            return waiter.result()
        activity.heartbeat(*details)


async def in_thread(fn: Callable[..., T], *args: Any, details: tuple[Any, ...] = ()) -> T:
    """Run blocking ``fn`` on a thread of its own, heartbeating ``details`` while it runs."""
    thread = ThreadPoolExecutor(1, thread_name_prefix="activity")
    try:
        return await beating(thread.submit(fn, *args), details)
    finally:
        thread.shutdown(wait=False)


async def settle(job: Future[Any] | None) -> None:
    """Wait, without blocking the loop, until ``job`` no longer runs (after a cancel)."""
    while job is not None and not job.done():
        await asyncio.sleep(0.01)


def writing_key(export_id: str) -> str:
    return f"{export_id}.ndjson.gz.part"


def final_key(export_id: str) -> str:
    return f"{export_id}.ndjson.gz"


# ISA-L's level 1 writes plain gzip three times faster than zlib's level 1 (itself
# eight times faster than 6), and a little smaller.
GZIP_LEVEL = 1


class _Writer:
    """Appends gzip members to the artifact and keeps both digests: the content's (the
    trailer's SHA-256) and the file's. Runs on a worker thread, one call at a time; ISA-L
    and hashlib release the GIL on big buffers, so a whole batch goes in one piece."""

    def __init__(self, out: BinaryIO, content: Any, whole: Any) -> None:
        self.out, self.content, self.whole = out, content, whole

    def append(self, data: bytes, *, hashed: bool = True) -> int:
        """One gzip member: members concatenate into one valid gzip stream, so a file cut
        at a member boundary is always a whole prefix that can be resumed. Returns the
        file size once the member is flushed (a checkpoint's ``file_bytes``)."""
        member = igzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        self.out.write(member)
        self.out.flush()
        if hashed:
            self.content.update(data)
        self.whole.update(member)
        return self.out.tell()

    def points(self, page: PointRows) -> int:
        return self.append(fmt.point_lines(page.ids, page.vectors, page.payloads))


class _Counted(io.RawIOBase):
    """The first ``limit`` bytes of ``raw``, hashed as they are read."""

    def __init__(self, raw: BinaryIO, limit: int, digest: Any) -> None:
        self.raw, self.left, self.digest = raw, limit, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(min(len(buffer), self.left))
        self.left -= len(data)
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)


def _rehash(store: ArtifactStore, key: str, upto: int) -> tuple[Any, Any]:
    """Content and file digests of the first ``upto`` bytes of a partly written artifact,
    streamed (the prefix may be most of a big artifact)."""
    content, whole = hashlib.sha256(), hashlib.sha256()
    with store.open_read(key) as raw:
        counted = io.BufferedReader(_Counted(raw, upto, whole), 1 << 20)
        with igzip.IGzipFile(fileobj=counted) as gz:  # type: ignore[no-untyped-call]
            while chunk := gz.read(1 << 20):
                content.update(chunk)
        while counted.read(1 << 20):  # bytes past the last member's end, if any
            pass
    return content, whole


class TransferSteps:
    def __init__(
        self,
        pg: Postgres,
        vectors: VectorStore,
        store: ArtifactStore,
        limits: fmt.Limits = fmt.DEFAULT_LIMITS,
    ) -> None:
        self.rows = pg.sessions
        self.exports = pg.exports
        self.finishes = pg.finishes
        # for ColdSteps, which works through this
        self.locks = pg.locks
        self.cold = pg.cold
        self.vectors = vectors
        self.store = store
        self.limits = limits

    # export

    @implements(steps.CREATE_EXPORT_RECORD)
    async def create_export_record(self, inp: ExportRecordInput) -> None:
        with business_errors():  # 409 while an offload holds the session
            await self.exports.create(inp.export_id, inp.session_id, inp.owner_id, inp.operation_id)

    @implements(steps.DISCARD_EXPORT)
    async def discard_export(self, export_id: str) -> None:
        self.store.delete(writing_key(export_id))
        self.store.delete(final_key(export_id))
        await self.exports.delete(export_id)

    @implements(steps.WRITE_EXPORT)
    async def write_export(self, inp: WriteExportInput) -> ExportResult:
        """Write the artifact, resuming a crashed attempt from its last checkpoint.

        Encoding, compressing, hashing and writing batch N run on a thread while batch
        N+1 is scrolled; a checkpoint is heartbeated only once its batch is on disk, so
        a retry resumes exactly. The record is marked ready before the file gets its
        final name, so a retry after either step finishes the other and answers the
        same result.
        """
        done = await self._finished(inp.export_id)
        if done is not None:
            return done
        with business_errors():
            record = await self.rows.get(inp.session_id)
            if record.storage is Storage.offloaded:  # offloaded since the export was asked
                raise Offloaded(record.id)
            session = record.public()
        key = writing_key(inp.export_id)
        size, points, sha, file_sha = await self.write_artifact(key, session, inp.batch_size)
        await self.exports.ready(
            inp.export_id,
            size_bytes=size,
            points=points,
            sha256=sha,
            file_sha256=file_sha,
        )
        await in_thread(self.store.publish, key, final_key(inp.export_id))
        return ExportResult(export_id=inp.export_id, size_bytes=size, points=points, sha256=sha)

    async def write_artifact(
        self, key: str, session: SessionModel, batch_size: int
    ) -> tuple[int, int, str, str]:
        """Write the session's points to ``key`` (resuming from the heartbeated checkpoint
        of an earlier attempt): (size, points, content SHA-256, file SHA-256). Shared by
        exports and offloads (section G), which publish the file under their own names."""
        collection = session.qdrant_collection_name
        details = activity.info().heartbeat_details
        checkpoint = ExportCheckpoint.model_validate(details[0]) if details else None
        if checkpoint is not None and (self.store.size(key) or 0) < checkpoint.file_bytes:
            # the file lost what the checkpoint says was written (a host crash before the
            # page cache reached the disk, or another host without the shared volume)
            log.warning("export file shorter than its checkpoint; starting over", key=key)
            checkpoint = None
        if checkpoint is None:
            out = self.store.open_append(key, truncate_to=0)
            writer = _Writer(out, hashlib.sha256(), hashlib.sha256())
            head = fmt.header_line(
                session.model_dump(mode="json"),
                session.configuration.vector_size,
                session.configuration.distance.value,
                datetime.now(UTC).isoformat(),
            )
            checkpoint = ExportCheckpoint(
                file_bytes=await asyncio.to_thread(writer.append, head), points=0, offset=None
            )
            activity.heartbeat(checkpoint)
        else:
            content, whole = await in_thread(
                _rehash, self.store, key, checkpoint.file_bytes, details=(checkpoint,)
            )
            out = self.store.open_append(key, truncate_to=checkpoint.file_bytes)
            writer = _Writer(out, content, whole)
        with out:
            checkpoint = await self._write_points(writer, collection, checkpoint, batch_size)
            sha = writer.content.hexdigest()
            size = await asyncio.to_thread(
                writer.append, fmt.trailer_line(checkpoint.points, sha), hashed=False
            )
        return size, checkpoint.points, sha, writer.whole.hexdigest()

    async def _write_points(
        self, writer: _Writer, collection: str, checkpoint: ExportCheckpoint, batch_size: int
    ) -> ExportCheckpoint:
        """Scroll from the checkpoint to the end; return the checkpoint of the last batch."""
        offset = checkpoint.offset
        # (the write of a batch, the checkpoint that holds once it is on disk)
        pending: tuple[Future[int], ExportCheckpoint] | None = None
        thread = ThreadPoolExecutor(1, thread_name_prefix="export-writer")

        async def landed(job: tuple[Future[int], ExportCheckpoint]) -> ExportCheckpoint:
            written = job[1].model_copy(update={"file_bytes": await beating(job[0], (checkpoint,))})
            activity.heartbeat(written)
            return written

        # a session without a collection has no points; one that goes away under the
        # writer (an offload's drop) leaves a part of them, which must not pass as whole
        present = (
            checkpoint.points > 0 or offset is not None or await self.vectors.exists(collection)
        )
        try:
            while present:
                page, offset = await self.vectors.scroll_rows(
                    collection, limit=batch_size, offset=offset
                )
                if not await self.vectors.exists(collection):
                    raise ApplicationError(
                        f"the collection {collection} was dropped while being written out",
                        type=ErrorType.conflict.value,
                        non_retryable=True,
                    )
                if pending is not None:
                    checkpoint, pending = await landed(pending), None
                if page.ids:
                    after = ExportCheckpoint(
                        file_bytes=checkpoint.file_bytes,
                        points=checkpoint.points + len(page.ids),
                        offset=offset,
                    )
                    pending = (thread.submit(writer.points, page), after)
                    points_moved(len(page.ids))
                if offset is None:
                    break
            if pending is not None:
                checkpoint, pending = await landed(pending), None
        finally:
            # cancelled or failed: the file stays open until the thread is done with it
            await settle(pending[0] if pending else None)
            thread.shutdown(wait=False)
        return checkpoint

    async def _finished(self, export_id: str) -> ExportResult | None:
        row = await self.exports.get(export_id)
        if row.status != "ready":
            return None
        if self.store.size(final_key(export_id)) is None:
            await in_thread(self.store.publish, writing_key(export_id), final_key(export_id))
        return ExportResult(
            export_id=export_id,
            size_bytes=row.size_bytes,
            points=row.points,
            sha256=row.sha256,
        )

    # import

    @implements(steps.VALIDATE_IMPORT)
    async def validate_import(self, key: str) -> ImportHeader:
        """Read the whole input before anything is created; a bad one is a 422, at once.

        The read is one long thread call (33 s for 200k points once), so the coroutine
        heartbeats while it runs. Lines are read within the import limits, so memory
        stays flat whatever the input holds; a cancelled activity (a worker shutting
        down) stops the thread at the next line."""
        stop = threading.Event()

        def check() -> fmt.Header:
            with self.store.open_read(key) as raw:
                return fmt.validate(raw, self.limits, stop)

        try:
            with _refusals():
                header = await in_thread(check)
        finally:
            stop.set()
        return ImportHeader(
            session=header.session,
            vector_size=header.vector_size,
            distance=header.distance,
            points=header.points,
            sha256=header.sha256,
        )

    @implements(steps.READ_IMPORT_HEADER)
    async def read_import_header(self, key: str) -> ImportHeader:
        """The header line alone, checked like a ``POST /sessions`` body: enough to create
        the session; the rest is checked while it is imported (``import_points``)."""
        with _refusals():

            def read() -> tuple[int, str, dict[str, Any]]:
                with self.store.open_read(key) as raw:
                    return fmt.read_header(raw, self.limits)

            size, distance, session = await in_thread(read)
        return ImportHeader(
            session=session, vector_size=size, distance=distance, points=0, sha256=""
        )

    @implements(steps.IMPORT_POINTS)
    async def import_points(self, inp: ImportPointsInput) -> int:
        """Upsert the artifact's points in batches from the heartbeated count.

        Each batch is read, parsed and upserted in one call on the vector store's thread
        (parsing and building points hold the GIL: a reader thread beside it only slowed
        the import down, measured). With ``verify``, that same read checks every line
        and, at the end, the trailer's count and SHA-256 (a bad artifact fails at once,
        and the operation's undo drops what was imported). Flushed once at the end: every
        batch is in the engine's write-ahead log before its count is heartbeated.
        """
        details = activity.info().heartbeat_details
        done = int(details[0]) if details else 0
        raw = self.store.open_read(inp.artifact_key)
        stop = threading.Event()
        call: asyncio.Future[int] | None = None
        try:
            with _refusals():
                checked = fmt.CheckedPoints(raw, self.limits, stop, skip=done)
                points: Iterator[PointTuple] = (
                    iter(checked)
                    if inp.verify
                    else fmt.iter_points(raw, skip=done, limits=self.limits)
                )
                interval = heartbeat_interval(activity.info().heartbeat_timeout)
                while True:
                    call = asyncio.ensure_future(
                        self.vectors.upsert_from(inp.collection, points, inp.batch_size)
                    )
                    while not (await asyncio.wait({call}, timeout=interval))[0]:
                        activity.heartbeat(done)  # a batch of long lines outlasting a beat
                    if not (n := call.result()):
                        break
                    done += n
                    points_moved(n)
                    activity.heartbeat(done)
                if inp.verify and inp.expect_sha256 is not None:
                    found = checked.header.sha256 if checked.header else None
                    if found != inp.expect_sha256:
                        raise fmt.InvalidArtifact(
                            f"the artifact's SHA-256 {found} is not the one recorded when it "
                            f"was written ({inp.expect_sha256}): another or altered file"
                        )
        finally:
            stop.set()  # a cancelled wait leaves the engine's thread reading: stop it,
            if call is not None:  # and wait for it before closing the file under it
                await asyncio.wait({call})
                if not call.cancelled():
                    call.exception()  # retrieved: it was raised above, or is moot
            raw.close()
        await self.vectors.flush(inp.collection)
        return done

    @implements(steps.FINISH_IMPORT)
    async def finish_import(self, inp: FinishImportInput) -> SessionModel:
        record = await self.finishes.finish_import(
            inp.operation_id, inp.session_id, inp.processing_stats, inp.model_usage
        )
        return record.public()

    @implements(steps.DELETE_ARTIFACT)
    async def delete_artifact(self, key: str) -> None:
        self.store.delete(key)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A bad or missing artifact fails its operation at once (no retries): 422 or 404."""
    try:
        yield
    except fmt.InvalidArtifact as exc:
        raise ApplicationError(str(exc), type=ErrorType.invalid.value, non_retryable=True) from exc
    except FileNotFoundError as exc:
        raise ApplicationError(
            "the artifact to import is gone", type=ErrorType.not_found.value, non_retryable=True
        ) from exc
