"""Export documents, export artifacts and imports (API.md sections A and D)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from session_service.api.deps import CurrentActor, IdempotencyKey, RuntimeDep
from session_service.api.openapi import errors
from session_service.api.prefer import respond
from session_service.api.routes.cold import first_use
from session_service.domain.errors import Unprocessable, UnsupportedMediaType
from session_service.domain.models import MAX_PAGE

router = APIRouter(tags=["exports"])

UPLOAD_TYPES = ("application/gzip", "application/x-gzip", "application/x-ndjson")
PreferHeader = Annotated[str | None, Header(description="respond-async, or wait=N")]


def is_upload(scope: Any) -> bool:
    """Uploaded artifacts may exceed the body limit: they stream to a staging file."""
    if scope.get("path") != "/sessions/import" or scope.get("method") != "POST":
        return False
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").decode().lower()
    return ctype.split(";")[0].strip() in UPLOAD_TYPES


@router.get("/sessions/{session_id}/export", response_model=None)
async def export_document(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    include_data: bool = True,
    prefer: PreferHeader = None,
) -> StreamingResponse | JSONResponse:
    """The session and (with ``include_data``) every point, streamed as read from Qdrant;
    an offloaded session is reloaded first."""

    async def call() -> StreamingResponse:
        body = await runtime.transfers.document(actor, session_id, include_data)
        return StreamingResponse(body, media_type="application/json")

    return await first_use(runtime, actor, session_id, prefer, call)


@router.post("/sessions/{session_id}/exports")
async def create_export(
    session_id: str,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Write a durable, checksummed artifact of the session (an export operation); an
    offloaded session is reloaded first."""

    async def call() -> JSONResponse:
        started = await runtime.transfers.start_export(actor, session_id, key)
        return await respond(runtime.operations, started, runtime.settings, prefer)

    return await first_use(runtime, actor, session_id, prefer, call)


@router.get("/exports")
async def list_exports(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    actor: CurrentActor,
    session_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    page_token: str | None = None,
) -> list[dict[str, Any]]:
    """Export artifacts, newest first; next page in ``Link``."""
    items, token = await runtime.transfers.list_exports(actor, session_id, limit, page_token)
    if token is not None:
        url = request.url.include_query_params(page_token=token, limit=limit)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return items


@router.get("/exports/{export_id}")
async def get_export(export_id: str, runtime: RuntimeDep, actor: CurrentActor) -> dict[str, Any]:
    """One export's metadata: status, size, point count, checksum."""
    return await runtime.transfers.get_export(actor, export_id)


@router.get("/exports/{export_id}/download", response_class=FileResponse, responses=errors(409))
async def download_export(export_id: str, runtime: RuntimeDep, actor: CurrentActor) -> FileResponse:
    """The artifact (gzip'd NDJSON), with its length and checksums in the headers."""
    row, path = await runtime.transfers.download(actor, export_id)
    assert row.file_sha256 is not None and row.sha256 is not None  # a ready export has both
    file_digest = base64.b64encode(bytes.fromhex(row.file_sha256)).decode()
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"session-{row.session_id}-{export_id}.ndjson.gz",
        headers={
            "Repr-Digest": f"sha-256=:{file_digest}:",
            "X-Content-SHA256": row.sha256,
            "X-Points": str(row.points),
        },
    )


@router.delete("/exports/{export_id}", responses=errors(403, 409))
async def delete_export(export_id: str, runtime: RuntimeDep, actor: CurrentActor) -> dict[str, str]:
    """Remove an artifact and its record."""
    await runtime.transfers.delete_export(actor, export_id)
    return {"message": f"Export {export_id} deleted"}


@router.post(
    "/sessions/import",
    responses=errors(404, 409, 415),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "object", "description": "an export document (section A)"},
                            {"type": "object", "properties": {"export_id": {"type": "string"}}},
                        ]
                    }
                },
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    },
)
async def import_session(
    request: Request,
    runtime: RuntimeDep,
    actor: CurrentActor,
    key: IdempotencyKey,
    new_name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Import an export document, an ``export_id``, or an uploaded artifact (an import
    operation). A truncated, corrupted or wrong-version input is 422 and creates nothing."""
    transfers = runtime.transfers
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in UPLOAD_TYPES:
        length = request.headers.get("content-length", "")
        artifact, digest = await transfers.stage_upload(
            request.stream(), int(length) if length.isdigit() else None
        )
        staged = True
    elif ctype in ("application/json", ""):
        raw = await request.body()
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise Unprocessable("the body is not valid JSON (or is nested too deeply)") from None
        if not isinstance(doc, dict):
            raise Unprocessable('the body must be an export document or {"export_id": ...}')
        digest = hashlib.sha256(raw).hexdigest()
        if set(doc) == {"export_id"}:
            if not isinstance(doc["export_id"], str):
                raise Unprocessable("export_id must be a string")
            artifact = await transfers.export_artifact(actor, doc["export_id"])
            staged = False
        else:
            artifact = await transfers.stage_document(doc)
            staged = True
    else:
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r} can't be imported: send application/json, "
            "application/gzip or application/x-ndjson"
        )
    started = await transfers.start_import(
        actor,
        artifact_key=artifact,
        staged=staged,
        new_name=new_name,
        idempotency_key=key,
        body_digest=digest,
    )
    return await respond(runtime.operations, started, runtime.settings, prefer)
