"""The async client: ``SessionClient`` (httpx.AsyncClient); the sync one mirrors it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from session_service.client import calls
from session_service.client.calls import CHUNK, Call, Outcome, Page, query
from session_service.client.errors import ConnectionFailed, error_for
from session_service.client.retry import RetryPolicy
from session_service.domain.models import (
    Collaborators,
    CollectionInfo,
    MergeRequest,
    ModelType,
    Operation,
    PointsPage,
    RetentionPolicy,
    SessionCreate,
    SessionModel,
    SessionUpdate,
    SplitRequest,
    StatsUpdate,
)

T = TypeVar("T")


def headers_for(api_key: str | None, user_id: str | None) -> dict[str, str]:
    headers = {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if user_id:
        headers["X-User-Id"] = user_id
    return headers


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file in chunks, each read off the event loop: memory stays at one chunk."""
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


class SessionClient:
    """Async client of the whole API (API.md A to G); see the package docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        user_id: str | None = None,
        timeout: float = 60,
        retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers_for(api_key, user_id),
            timeout=timeout,
            transport=transport,
        )
        self.policy = retry_policy or RetryPolicy(attempts=retries + 1)

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    # transport

    async def _once(self, call: Call[Any]) -> httpx.Response:
        content = _file_chunks(call.upload) if call.upload is not None else None
        try:
            r = await self.http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=content,
                headers=call.headers,
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
        if r.status_code >= 400:
            raise error_for(r)
        return r

    async def send(self, call: Call[T]) -> T:
        """One call, retried by the policy when safe; a typed error otherwise."""
        async for attempt in self.policy.asynchronous(call.retriable):
            with attempt:
                response = await self._once(call)
        return call.parse(response)

    async def _pages(self, call: Call[Page[T]]) -> AsyncIterator[T]:
        while True:
            page = await self.send(call)
            for item in page.items:
                yield item
            if not page.next_url:
                return
            call = dataclasses.replace(call, path=page.next_url, params=None)

    async def _download(self, path: str, params: dict[str, Any] | None, dest: Path) -> int:
        """Stream an answer into ``dest`` (via ``dest.part``, renamed when complete)."""
        part = dest.with_name(dest.name + ".part")
        async for attempt in self.policy.asynchronous(True):
            with attempt:
                size = 0
                try:
                    async with self.http.stream("GET", path, params=params) as r:
                        if r.status_code >= 400:
                            await r.aread()
                            raise error_for(r)
                        with part.open("wb") as out:
                            async for chunk in r.aiter_bytes(CHUNK):
                                out.write(chunk)
                                size += len(chunk)
                except httpx.TransportError as exc:
                    raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
        part.replace(dest)
        return size

    # sessions (API.md A)

    async def health(self) -> dict[str, Any]:
        return await self.send(Call("GET", "/health", calls.as_dict))

    async def create_session(
        self, body: SessionCreate, *, idempotency_key: str | None = None
    ) -> SessionModel:
        return await self.send(calls.create_session(body, idempotency_key))

    async def get_session(self, session_id: str) -> SessionModel:
        return await self.send(Call("GET", f"/sessions/{session_id}", calls.model(SessionModel)))

    async def sessions_page(
        self,
        *,
        status: str | None = None,
        owner_id: str | None = None,
        tags: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> Page[SessionModel]:
        return await self.send(calls.sessions_page(status, owner_id, tags, limit, page_token))

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        owner_id: str | None = None,
        tags: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[SessionModel]:
        """Every matching session, page after page (``Link: rel="next"``); ``limit`` is
        the page size."""
        async for s in self._pages(calls.sessions_page(status, owner_id, tags, limit, None)):
            yield s

    iter_sessions = list_sessions

    async def update_session(
        self, session_id: str, body: SessionUpdate, *, if_match: str | None = None
    ) -> SessionModel:
        return await self.send(calls.update_session(session_id, body, if_match))

    async def delete_session(
        self, session_id: str, *, permanent: bool = False, wait: float | None = None
    ) -> Outcome:
        return await self.send(calls.delete_session(session_id, permanent, wait))

    async def archive_session(self, session_id: str) -> dict[str, Any]:
        return await self.send(calls.plain("POST", f"/sessions/{session_id}/archive"))

    async def restore_session(self, session_id: str) -> dict[str, Any]:
        return await self.send(calls.plain("POST", f"/sessions/{session_id}/restore"))

    async def share(
        self, session_id: str, user_ids: list[str], permissions: list[str] | None = None
    ) -> SessionModel:
        return await self.send(calls.share(session_id, user_ids, permissions))

    async def unshare(self, session_id: str, user_id: str) -> dict[str, Any]:
        return await self.send(
            Call("DELETE", f"/sessions/{session_id}/share/{user_id}", calls.as_dict)
        )

    async def collaborators(self, session_id: str) -> Collaborators:
        return await self.send(
            Call("GET", f"/sessions/{session_id}/collaborators", calls.model(Collaborators))
        )

    async def stats(self, session_id: str) -> dict[str, Any]:
        return await self.send(Call("GET", f"/sessions/{session_id}/stats", calls.as_dict))

    async def add_stats(self, session_id: str, body: StatsUpdate) -> dict[str, Any]:
        return await self.send(calls.add_stats(session_id, body))

    async def record_model_usage(
        self, session_id: str, model_type: ModelType | str, model_name: str
    ) -> dict[str, Any]:
        return await self.send(calls.model_usage(session_id, model_type, model_name))

    async def compare(self, session_ids: list[str]) -> dict[str, Any]:
        return await self.send(calls.compare(session_ids))

    async def export_document(
        self, session_id: str, dest: Path, *, include_data: bool = True
    ) -> int:
        """The first service's export document (``GET /sessions/{id}/export``) into a
        file, streamed."""
        return await self._download(
            f"/sessions/{session_id}/export", query(include_data=include_data), dest
        )

    # retention (API.md A)

    async def retention_policy(self) -> dict[str, Any]:
        return await self.send(Call("GET", "/sessions/retention-policy", calls.as_dict))

    async def set_retention_policy(self, policy: RetentionPolicy) -> dict[str, Any]:
        return await self.send(calls.set_policy(policy))

    async def cleanup(
        self,
        policy: RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return await self.send(calls.cleanup(policy, dry_run, wait, idempotency_key))

    # points (API.md C)

    async def upsert_points(self, session_id: str, points: list[dict[str, Any]]) -> int:
        return await self.send(calls.upsert_points(session_id, points))

    async def get_points(
        self,
        session_id: str,
        *,
        limit: int = 100,
        offset: int | str | None = None,
        with_vectors: bool = False,
    ) -> PointsPage:
        return await self.send(calls.get_points(session_id, limit, offset, with_vectors))

    async def iter_points(
        self, session_id: str, *, page_size: int = 100, with_vectors: bool = False
    ) -> AsyncIterator[Any]:
        """Every point of the session, following ``next_offset``."""
        offset: int | str | None = None
        while True:
            page = await self.get_points(
                session_id, limit=page_size, offset=offset, with_vectors=with_vectors
            )
            for p in page.points:
                yield p
            if page.next_offset is None:
                return
            offset = page.next_offset

    async def delete_points(self, session_id: str, ids: list[int | str]) -> int:
        return await self.send(calls.delete_points(session_id, ids))

    async def query_points(
        self,
        session_id: str,
        vector: list[float],
        *,
        limit: int = 10,
        filter: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        with_payload: bool = True,
        with_vectors: bool = False,
    ) -> list[dict[str, Any]]:
        return await self.send(
            calls.query_points(
                session_id, vector, limit, filter, score_threshold, with_payload, with_vectors
            )
        )

    async def collection(self, session_id: str) -> CollectionInfo:
        return await self.send(
            Call("GET", f"/sessions/{session_id}/collection", calls.model(CollectionInfo))
        )

    # long-running operations (API.md A, B, G)

    async def merge(
        self, body: MergeRequest, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        return await self.send(
            calls.start(
                "POST", "/sessions/merge", wait=wait, key=idempotency_key, json=calls.body(body)
            )
        )

    async def split(
        self,
        session_id: str,
        body: SplitRequest,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return await self.send(
            calls.start(
                "POST",
                f"/sessions/{session_id}/split",
                wait=wait,
                key=idempotency_key,
                json=calls.body(body),
            )
        )

    async def offload(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Move the session's points to an artifact (API.md section G)."""
        return await self.send(
            calls.start("POST", f"/sessions/{session_id}/offload", wait=wait, key=idempotency_key)
        )

    async def reload(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Bring an offloaded session's points back (joins a reload in flight)."""
        return await self.send(
            calls.start("POST", f"/sessions/{session_id}/reload", wait=wait, key=idempotency_key)
        )

    async def offloaded_page(
        self, *, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.send(
            Call(
                "GET", "/sessions/offloaded", calls.as_list, params=query(limit=limit, after=after)
            )
        )

    async def offloaded(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Offloaded sessions with their artifacts' sizes, up to ``limit``, every page."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while len(out) < limit:
            size = min(limit - len(out), 1000)
            page = await self.offloaded_page(limit=size, after=after)
            out.extend(page)
            if len(page) < size:
                break
            after = page[-1]["session_id"]
        return out

    # exports and imports (API.md D)

    async def export(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        return await self.send(
            calls.start("POST", f"/sessions/{session_id}/exports", wait=wait, key=idempotency_key)
        )

    async def exports_page(
        self,
        *,
        session_id: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> Page[dict[str, Any]]:
        return await self.send(calls.exports_page(session_id, limit, page_token))

    async def iter_exports(
        self, *, session_id: str | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every export artifact (newest first), page after page."""
        async for e in self._pages(calls.exports_page(session_id, limit, None)):
            yield e

    async def get_export(self, export_id: str) -> dict[str, Any]:
        return await self.send(Call("GET", f"/exports/{export_id}", calls.as_dict))

    async def delete_export(self, export_id: str) -> dict[str, Any]:
        return await self.send(Call("DELETE", f"/exports/{export_id}", calls.as_dict))

    async def download_export(self, export_id: str, dest: Path) -> int:
        """The artifact into ``dest``, streamed; its size in bytes."""
        return await self._download(f"/exports/{export_id}/download", None, dest)

    async def import_file(
        self,
        path: Path,
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Upload an artifact (gzip'd or plain NDJSON), streamed from the file."""
        return await self.send(
            calls.upload(path, new_name=new_name, wait=wait, key=idempotency_key)
        )

    async def import_export(
        self,
        export_id: str,
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return await self.send(
            calls.import_json({"export_id": export_id}, new_name, wait, idempotency_key)
        )

    async def import_document(
        self,
        document: dict[str, Any],
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Import the first service's export document (section A's shape)."""
        return await self.send(calls.import_json(document, new_name, wait, idempotency_key))

    # operations (API.md B)

    async def get_operation(self, operation_id: str) -> Operation:
        return await self.send(Call("GET", f"/operations/{operation_id}", calls.model(Operation)))

    async def operations_page(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> Page[Operation]:
        return await self.send(calls.operations_page(session_id, kind, status, limit))

    async def list_operations(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Operation]:
        """One page of operations, newest first."""
        return (
            await self.operations_page(session_id=session_id, kind=kind, status=status, limit=limit)
        ).items

    async def iter_operations(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Operation]:
        """Operations newest first, following ``Link: rel="next"`` when the service pages."""
        async for op in self._pages(calls.operations_page(session_id, kind, status, limit)):
            yield op

    async def cancel_operation(self, operation_id: str) -> Operation:
        return await self.send(calls.cancel(operation_id))

    async def wait(
        self,
        operation_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Operation], None] | None = None,
    ) -> Operation:
        """Poll until the operation ends; ``on_progress`` sees every state on the way."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            op = await self.get_operation(operation_id)
            if on_progress is not None:
                on_progress(op)
            if op.done:
                return op
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"operation {operation_id} still {op.status.value}")
            await asyncio.sleep(poll)
