"""Exports and imports as the API sees them: starting the operations, streaming the
export document, serving artifacts, staging uploads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from session_service.domain import export_format as fmt
from session_service.domain.access import Actor
from session_service.domain.errors import (
    Conflict,
    ContentTooLarge,
    Forbidden,
    Locked,
    NotFound,
    Offloaded,
    Unprocessable,
)
from session_service.domain.models import Permission, Storage
from session_service.services.operations import OperationService, Started
from session_service.services.sessions import SessionService
from session_service.stores.artifacts import DirectoryStore
from session_service.stores.export_rows import ExportRow
from session_service.stores.postgres import PageCursor
from session_service.temporal.activities.transfer_steps import final_key
from session_service.temporal.contracts import ExportInput, ImportInput, OperationKind

SCROLL_BATCH = 1024


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def export_view(row: ExportRow) -> dict[str, Any]:
    return {
        "export_id": row.export_id,
        "session_id": row.session_id,
        "owner_id": row.owner_id,
        "status": row.status,
        "size_bytes": row.size_bytes,
        "points": row.points,
        "sha256": row.sha256,
        "operation_id": row.operation_id,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "links": {
            "self": f"/exports/{row.export_id}",
            "download": f"/exports/{row.export_id}/download",
            "operation": f"/operations/{row.operation_id}",
        },
    }


class TransferService:
    def __init__(
        self, sessions: SessionService, operations: OperationService, store: DirectoryStore
    ) -> None:
        self.sessions = sessions
        self.exports = sessions.pg.exports
        self.vectors = sessions.vectors
        self.operations = operations
        self.store = store

    # the export document (section A), streamed

    async def document(
        self, actor: Actor, session_id: str, include_data: bool
    ) -> AsyncIterator[bytes]:
        session = await self.sessions.load(actor, session_id, Permission.read)
        if include_data and session.storage is Storage.offloaded:
            raise Offloaded(session.id)
        public = session.public()
        head = (
            b'{"session":'
            + _dumps(public.model_dump(mode="json"))
            + b',"export_timestamp":'
            + _dumps(datetime.now(UTC).isoformat())
            + b',"collection_data":'
        )

        async def body() -> AsyncIterator[bytes]:
            yield head
            if not include_data:
                yield b"null}"
                return
            name = public.qdrant_collection_name
            yield b'{"collection_name":' + _dumps(name) + b',"points":['
            count = 0
            offset: int | str | None = None
            if await self.vectors.collection_params(name) is not None:
                while True:
                    batch, offset = await self.vectors.scroll(
                        name, limit=SCROLL_BATCH, offset=offset, with_vectors=True
                    )
                    if batch:
                        parts = [
                            _dumps({"id": p.id, "vector": p.vector, "payload": p.payload})
                            for p in batch
                        ]
                        yield (b"," if count else b"") + b",".join(parts)
                        count += len(batch)
                    if offset is None:
                        break
            if count == 0 or not await self.vectors.exists(name):
                # dropped by an offload under the stream: cut it short (an invalid document)
                # rather than end a valid-looking one with part of the points
                await self.sessions.still_readable(session.id)
            yield b'],"exported_points":' + str(count).encode() + b"}}"

        if (
            include_data
            and await self.vectors.collection_params(public.qdrant_collection_name) is None
        ):
            await self.sessions.still_readable(session.id)  # offloaded since: first use
        return body()

    # artifacts

    async def start_export(self, actor: Actor, session_id: str, key: str | None) -> Started:
        session = await self.sessions.load(actor, session_id, Permission.read)
        if session.storage is Storage.offloaded:
            raise Offloaded(session.id)
        if (session.locked_by or "").startswith("offload-"):
            raise Locked(session.id, session.locked_by or "")  # it would drop the points
        arg = ExportInput(
            session_id=session.id,
            export_id=str(uuid.uuid4()),
            owner_id=session.owner_id,
            options=self.operations.options(),
        )
        return await self.operations.start_keyed(
            OperationKind.EXPORT,
            actor,
            key,
            {"session_id": session.id},
            arg,
            session_ids=[session.id],
            owner_id=session.owner_id,
            summary=f"export {session.name!r}",
        )

    async def _visible_export(self, actor: Actor, export_id: str) -> ExportRow:
        row = await self.exports.get(export_id)
        if actor.trusted or (row.owner_id is not None and row.owner_id == actor.user_id):
            return row
        try:
            await self.sessions.load(actor, row.session_id, Permission.read)
        except (NotFound, Forbidden):
            raise NotFound(f"export {export_id} not found") from None
        return row

    async def get_export(self, actor: Actor, export_id: str) -> dict[str, Any]:
        return export_view(await self._visible_export(actor, export_id))

    async def list_exports(
        self, actor: Actor, session_id: str | None, limit: int, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of exports, newest first; a user sees only those of sessions they can
        read (so a page may hold fewer than ``limit``)."""
        after = PageCursor.decode(page_token) if page_token else None
        rows = await self.exports.page(session_id, limit + 1, after)
        next_token = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = PageCursor(rows[-1].created_at, rows[-1].export_id).encode()
        out = []
        for row in rows:
            try:
                await self._visible_export(actor, row.export_id)
            except NotFound:
                continue
            out.append(export_view(row))
        return out, next_token

    async def download(self, actor: Actor, export_id: str) -> tuple[ExportRow, str]:
        row = await self._visible_export(actor, export_id)
        if row.status != "ready":
            raise Conflict(f"export {export_id} is still being written; wait for its operation")
        return row, str(self.store.path(final_key(export_id)))

    async def delete_export(self, actor: Actor, export_id: str) -> None:
        """Deleting needs ``write`` on the session (or being the export's owner)."""
        row = await self._visible_export(actor, export_id)
        if not actor.trusted and row.owner_id != actor.user_id:
            await self.sessions.load(actor, row.session_id, Permission.write)
        if row.status != "ready":
            raise Conflict(f"export {export_id} is still being written; cancel its operation")
        self.store.delete(final_key(export_id))
        await self.exports.delete(export_id)

    # import

    @property
    def limits(self) -> fmt.Limits:
        return fmt.Limits.of(self.operations.settings)

    async def _check_header(self, key: str) -> None:
        """Refuse a bad header (line 1 alone: quick) before an operation starts."""

        def check() -> None:
            with self.store.open_read(key) as raw:
                fmt.read_header(raw, self.limits)

        try:
            await asyncio.to_thread(check)
        except fmt.InvalidArtifact as exc:
            raise Unprocessable(str(exc)) from exc
        except FileNotFoundError:
            raise NotFound("the artifact to import is gone") from None

    async def stage_upload(
        self, chunks: AsyncIterator[bytes], length: int | None = None
    ) -> tuple[str, str]:
        """Stream an uploaded artifact to a staging file, within ``MAX_IMPORT_BYTES``, and
        check its header; (key, SHA-256 of the bytes). A refused upload leaves no file."""
        limit = self.operations.settings.max_import_bytes
        too_large = f"the upload is larger than the {limit}-byte limit (MAX_IMPORT_BYTES)"
        if length is not None and length > limit:
            raise ContentTooLarge(too_large)
        key = f"staging-{uuid.uuid4().hex}.ndjson.gz"
        digest = hashlib.sha256()
        size = 0
        out = self.store.open_append(key, truncate_to=0)
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise ContentTooLarge(too_large)
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            finally:
                out.close()
            await self._check_header(key)
        except BaseException:
            self.store.delete(key)
            raise
        return key, digest.hexdigest()

    async def stage_document(self, doc: dict[str, Any]) -> str:
        """Write an inline document as a staging artifact, checked on the way; a refused
        document leaves no file."""
        key = f"staging-{uuid.uuid4().hex}.ndjson.gz"

        def write() -> None:
            fmt.document_parts(doc)  # the header's checks, before the file exists
            with self.store.open_append(key, truncate_to=0) as out:
                fmt.document_to_artifact(doc, out)

        try:
            await asyncio.to_thread(write)
        except BaseException as exc:
            self.store.delete(key)
            if isinstance(exc, fmt.InvalidArtifact):
                raise Unprocessable(f"the export document can't be imported: {exc}") from exc
            raise
        return key

    async def export_artifact(self, actor: Actor, export_id: str) -> str:
        row = await self._visible_export(actor, export_id)
        if row.status != "ready":
            raise Conflict(f"export {export_id} is still being written")
        key = final_key(export_id)
        await self._check_header(key)
        return key

    async def start_import(
        self,
        actor: Actor,
        *,
        artifact_key: str,
        staged: bool,
        new_name: str | None,
        idempotency_key: str | None,
        body_digest: str,
    ) -> Started:
        body = {"input": body_digest, "new_name": new_name}
        existing = await self.operations.find_keyed(
            OperationKind.IMPORT, actor, idempotency_key, body
        )
        if existing is not None:
            if staged:
                self.store.delete(artifact_key)
            return existing
        session_id = str(uuid.uuid4())
        arg = ImportInput(
            artifact_key=artifact_key,
            staged=staged,
            session_id=session_id,
            new_name=new_name,
            owner_id=actor.user_id,
            owner_from_artifact=actor.trusted,
            options=self.operations.options(),
        )
        return await self.operations.start_keyed(
            OperationKind.IMPORT,
            actor,
            idempotency_key,
            body,
            arg,
            session_ids=[session_id],
            owner_id=actor.user_id,
            summary="import " + (f"as {new_name!r}" if new_name else "a session"),
        )
