"""Export and import steps: artifacts are written and read here, in batches, with
heartbeated checkpoints; workflows only pass keys and counts."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from session_service import export_format as fmt
from session_service.activities.errors import business_errors
from session_service.activities.meter import points_moved
from session_service.models import SessionModel
from session_service.operation_types import (
    ErrorType,
    ExportCheckpoint,
    ExportRecordInput,
    ExportResult,
    FinishImportInput,
    ImportHeader,
    ImportPointsInput,
    WriteExportInput,
)
from session_service.stores.artifacts import ArtifactStore
from session_service.stores.repository import SessionRepository
from session_service.stores.vector_store import StoredPoint, VectorStore


def writing_key(export_id: str) -> str:
    return f"{export_id}.ndjson.gz.part"


def final_key(export_id: str) -> str:
    return f"{export_id}.ndjson.gz"


def _member(data: bytes) -> bytes:
    """One gzip member: members concatenate into one valid gzip stream, so a file cut
    at a member boundary is always a whole prefix that can be resumed."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def _rehash(store: ArtifactStore, key: str, upto: int) -> tuple[Any, Any]:
    """Content and file digests of the first ``upto`` bytes of a partly written artifact."""
    content, whole = hashlib.sha256(), hashlib.sha256()
    with store.open_read(key) as raw:
        prefix = raw.read(upto)
    whole.update(prefix)
    import io

    with gzip.GzipFile(fileobj=io.BytesIO(prefix)) as gz:
        while chunk := gz.read(1 << 20):
            content.update(chunk)
    return content, whole


class TransferSteps:
    def __init__(self, repo: SessionRepository, vectors: VectorStore, store: ArtifactStore) -> None:
        self.repo = repo
        self.vectors = vectors
        self.store = store

    # export

    @activity.defn(name="create_export_record")
    async def create_export_record(self, inp: ExportRecordInput) -> None:
        await self.repo.export_create(inp.export_id, inp.session_id, inp.owner_id, inp.operation_id)

    @activity.defn(name="discard_export")
    async def discard_export(self, export_id: str) -> None:
        self.store.delete(writing_key(export_id))
        self.store.delete(final_key(export_id))
        await self.repo.export_delete(export_id)

    @activity.defn(name="write_export")
    async def write_export(self, inp: WriteExportInput) -> ExportResult:
        """Write the artifact, resuming a crashed attempt from its last checkpoint.

        The record is marked ready before the file gets its final name, so a retry
        after either step finishes the other and answers the same result.
        """
        done = await self._finished(inp.export_id)
        if done is not None:
            return done
        with business_errors():
            session = (await self.repo.get(inp.session_id)).public()
        collection = session.qdrant_collection_name
        details = activity.info().heartbeat_details
        checkpoint = ExportCheckpoint.model_validate(details[0]) if details else None
        key = writing_key(inp.export_id)
        if checkpoint is None:
            content, whole = hashlib.sha256(), hashlib.sha256()
            points, offset = 0, None
            out = self.store.open_append(key, truncate_to=0)
            head = fmt.header_line(
                session.model_dump(mode="json"),
                session.configuration.vector_size,
                session.configuration.distance.value,
                datetime.now(UTC).isoformat(),
            )
            self._append(out, head, content, whole)
            activity.heartbeat(ExportCheckpoint(file_bytes=out.tell(), points=0, offset=None))
        else:
            content, whole = await asyncio.to_thread(
                _rehash, self.store, key, checkpoint.file_bytes
            )
            points, offset = checkpoint.points, checkpoint.offset
            out = self.store.open_append(key, truncate_to=checkpoint.file_bytes)
        with out:
            while True:
                if await self.vectors.collection_params(collection) is None:
                    break
                batch, offset = await self.vectors.scroll(
                    collection, limit=inp.batch_size, offset=offset, with_vectors=True
                )
                if batch:
                    lines = b"".join(fmt.point_line(p.id, p.vector, p.payload) for p in batch)
                    self._append(out, lines, content, whole)
                    points += len(batch)
                    points_moved(len(batch))
                activity.heartbeat(
                    ExportCheckpoint(file_bytes=out.tell(), points=points, offset=offset)
                )
                if offset is None:
                    break
            sha = content.hexdigest()
            self._append(out, fmt.trailer_line(points, sha), None, whole)
            size = out.tell()
        await self.repo.export_ready(
            inp.export_id,
            size_bytes=size,
            points=points,
            sha256=sha,
            file_sha256=whole.hexdigest(),
        )
        self.store.publish(key, final_key(inp.export_id))
        return ExportResult(export_id=inp.export_id, size_bytes=size, points=points, sha256=sha)

    async def _finished(self, export_id: str) -> ExportResult | None:
        row = await self.repo.export_get(export_id)
        if row["status"] != "ready":
            return None
        if self.store.size(final_key(export_id)) is None:
            self.store.publish(writing_key(export_id), final_key(export_id))
        return ExportResult(
            export_id=export_id,
            size_bytes=row["size_bytes"],
            points=row["points"],
            sha256=row["sha256"],
        )

    @staticmethod
    def _append(out: Any, data: bytes, content: Any, whole: Any) -> None:
        member = _member(data)
        out.write(member)
        out.flush()
        if content is not None:
            content.update(data)
        whole.update(member)

    # import

    @activity.defn(name="validate_import")
    async def validate_import(self, key: str) -> ImportHeader:
        """Read the whole input before anything is created; a bad one is a 422."""

        def check() -> fmt.Header:
            with self.store.open_read(key) as raw:
                return fmt.validate(raw)

        try:
            header = await asyncio.to_thread(check)
        except fmt.InvalidArtifact as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.invalid.value, non_retryable=True
            ) from exc
        except FileNotFoundError as exc:
            raise ApplicationError(
                "the artifact to import is gone", type=ErrorType.not_found.value, non_retryable=True
            ) from exc
        return ImportHeader(
            session=header.session,
            vector_size=header.vector_size,
            distance=header.distance,
            points=header.points,
            sha256=header.sha256,
        )

    @activity.defn(name="import_points")
    async def import_points(self, inp: ImportPointsInput) -> int:
        details = activity.info().heartbeat_details
        done = int(details[0]) if details else 0
        raw = self.store.open_read(inp.artifact_key)
        try:
            points = fmt.iter_points(raw, skip=done)
            while True:
                batch = await asyncio.to_thread(_take, points, inp.batch_size)
                if not batch:
                    break
                await self.vectors.upsert(inp.collection, batch)
                done += len(batch)
                points_moved(len(batch))
                activity.heartbeat(done)
        finally:
            raw.close()
        return done

    @activity.defn(name="finish_import")
    async def finish_import(self, inp: FinishImportInput) -> SessionModel:
        record = await self.repo.finish_import(
            inp.operation_id, inp.session_id, inp.processing_stats, inp.model_usage
        )
        return record.public()

    @activity.defn(name="delete_artifact")
    async def delete_artifact(self, key: str) -> None:
        self.store.delete(key)

    def all(self) -> list[object]:
        return [
            self.create_export_record,
            self.discard_export,
            self.write_export,
            self.validate_import,
            self.import_points,
            self.finish_import,
            self.delete_artifact,
        ]


def _take(points: Any, n: int) -> list[StoredPoint]:
    out = []
    for pid, vector, payload in points:
        out.append(StoredPoint(id=pid, vector=vector, payload=payload))
        if len(out) >= n:
            break
    return out
