"""The sync client: ``SyncSessionClient`` (httpx.Client), the same calls as the async one
(``aio.py``): requests are built and answers read by ``calls.py`` for both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
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


def _file_chunks(path: Path) -> Iterator[bytes]:
    """The file in chunks: memory stays at one chunk."""
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class SyncSessionClient:
    """Sync client of the whole API (API.md A to G); see the package docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        user_id: str | None = None,
        timeout: float = 60,
        retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers_for(api_key, user_id),
            timeout=timeout,
            transport=transport,
        )
        self.policy = retry_policy or RetryPolicy(attempts=retries + 1)

    def __enter__(self) -> SyncSessionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # transport

    def _once(self, call: Call[Any]) -> httpx.Response:
        content = _file_chunks(call.upload) if call.upload is not None else None
        try:
            r = self.http.request(
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

    def send(self, call: Call[T]) -> T:
        """One call, retried by the policy when safe; a typed error otherwise."""
        for attempt in self.policy.sync(call.retriable):
            with attempt:
                response = self._once(call)
        return call.parse(response)

    def _pages(self, call: Call[Page[T]]) -> Iterator[T]:
        while True:
            page = self.send(call)
            yield from page.items
            if not page.next_url:
                return
            call = dataclasses.replace(call, path=page.next_url, params=None)

    def _download(self, path: str, params: dict[str, Any] | None, dest: Path) -> int:
        """Stream an answer into ``dest`` (via ``dest.part``, renamed when complete)."""
        part = dest.with_name(dest.name + ".part")
        for attempt in self.policy.sync(True):
            with attempt:
                size = 0
                try:
                    with self.http.stream("GET", path, params=params) as r:
                        if r.status_code >= 400:
                            r.read()
                            raise error_for(r)
                        with part.open("wb") as out:
                            for chunk in r.iter_bytes(CHUNK):
                                out.write(chunk)
                                size += len(chunk)
                except httpx.TransportError as exc:
                    raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
        part.replace(dest)
        return size

    # sessions (API.md A)

    def health(self) -> dict[str, Any]:
        return self.send(Call("GET", "/health", calls.as_dict))

    def create_session(
        self, body: SessionCreate, *, idempotency_key: str | None = None
    ) -> SessionModel:
        return self.send(calls.create_session(body, idempotency_key))

    def get_session(self, session_id: str) -> SessionModel:
        return self.send(Call("GET", f"/sessions/{session_id}", calls.model(SessionModel)))

    def sessions_page(
        self,
        *,
        status: str | None = None,
        owner_id: str | None = None,
        tags: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> Page[SessionModel]:
        return self.send(calls.sessions_page(status, owner_id, tags, limit, page_token))

    def list_sessions(
        self,
        *,
        status: str | None = None,
        owner_id: str | None = None,
        tags: str | None = None,
        limit: int | None = None,
    ) -> Iterator[SessionModel]:
        """Every matching session, page after page (``Link: rel="next"``); ``limit`` is
        the page size."""
        yield from self._pages(calls.sessions_page(status, owner_id, tags, limit, None))

    iter_sessions = list_sessions

    def update_session(
        self, session_id: str, body: SessionUpdate, *, if_match: str | None = None
    ) -> SessionModel:
        return self.send(calls.update_session(session_id, body, if_match))

    def delete_session(
        self, session_id: str, *, permanent: bool = False, wait: float | None = None
    ) -> Outcome:
        return self.send(calls.delete_session(session_id, permanent, wait))

    def archive_session(self, session_id: str) -> dict[str, Any]:
        return self.send(calls.plain("POST", f"/sessions/{session_id}/archive"))

    def restore_session(self, session_id: str) -> dict[str, Any]:
        return self.send(calls.plain("POST", f"/sessions/{session_id}/restore"))

    def share(
        self, session_id: str, user_ids: list[str], permissions: list[str] | None = None
    ) -> SessionModel:
        return self.send(calls.share(session_id, user_ids, permissions))

    def unshare(self, session_id: str, user_id: str) -> dict[str, Any]:
        return self.send(Call("DELETE", f"/sessions/{session_id}/share/{user_id}", calls.as_dict))

    def collaborators(self, session_id: str) -> Collaborators:
        return self.send(
            Call("GET", f"/sessions/{session_id}/collaborators", calls.model(Collaborators))
        )

    def stats(self, session_id: str) -> dict[str, Any]:
        return self.send(Call("GET", f"/sessions/{session_id}/stats", calls.as_dict))

    def add_stats(self, session_id: str, body: StatsUpdate) -> dict[str, Any]:
        return self.send(calls.add_stats(session_id, body))

    def record_model_usage(
        self, session_id: str, model_type: ModelType | str, model_name: str
    ) -> dict[str, Any]:
        return self.send(calls.model_usage(session_id, model_type, model_name))

    def compare(self, session_ids: list[str]) -> dict[str, Any]:
        return self.send(calls.compare(session_ids))

    def export_document(self, session_id: str, dest: Path, *, include_data: bool = True) -> int:
        """The first service's export document (``GET /sessions/{id}/export``) into a
        file, streamed."""
        return self._download(
            f"/sessions/{session_id}/export", query(include_data=include_data), dest
        )

    # retention (API.md A)

    def retention_policy(self) -> dict[str, Any]:
        return self.send(Call("GET", "/sessions/retention-policy", calls.as_dict))

    def set_retention_policy(self, policy: RetentionPolicy) -> dict[str, Any]:
        return self.send(calls.set_policy(policy))

    def cleanup(
        self,
        policy: RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return self.send(calls.cleanup(policy, dry_run, wait, idempotency_key))

    # points (API.md C)

    def upsert_points(self, session_id: str, points: list[dict[str, Any]]) -> int:
        return self.send(calls.upsert_points(session_id, points))

    def get_points(
        self,
        session_id: str,
        *,
        limit: int = 100,
        offset: int | str | None = None,
        with_vectors: bool = False,
    ) -> PointsPage:
        return self.send(calls.get_points(session_id, limit, offset, with_vectors))

    def iter_points(
        self, session_id: str, *, page_size: int = 100, with_vectors: bool = False
    ) -> Iterator[Any]:
        """Every point of the session, following ``next_offset``."""
        offset: int | str | None = None
        while True:
            page = self.get_points(
                session_id, limit=page_size, offset=offset, with_vectors=with_vectors
            )
            yield from page.points
            if page.next_offset is None:
                return
            offset = page.next_offset

    def delete_points(self, session_id: str, ids: list[int | str]) -> int:
        return self.send(calls.delete_points(session_id, ids))

    def query_points(
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
        return self.send(
            calls.query_points(
                session_id, vector, limit, filter, score_threshold, with_payload, with_vectors
            )
        )

    def collection(self, session_id: str) -> CollectionInfo:
        return self.send(
            Call("GET", f"/sessions/{session_id}/collection", calls.model(CollectionInfo))
        )

    # long-running operations (API.md A, B, G)

    def merge(
        self, body: MergeRequest, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        return self.send(
            calls.start(
                "POST", "/sessions/merge", wait=wait, key=idempotency_key, json=calls.body(body)
            )
        )

    def split(
        self,
        session_id: str,
        body: SplitRequest,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return self.send(
            calls.start(
                "POST",
                f"/sessions/{session_id}/split",
                wait=wait,
                key=idempotency_key,
                json=calls.body(body),
            )
        )

    def offload(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Move the session's points to an artifact (API.md section G)."""
        return self.send(
            calls.start("POST", f"/sessions/{session_id}/offload", wait=wait, key=idempotency_key)
        )

    def reload(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Bring an offloaded session's points back (joins a reload in flight)."""
        return self.send(
            calls.start("POST", f"/sessions/{session_id}/reload", wait=wait, key=idempotency_key)
        )

    def offloaded_page(self, *, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        return self.send(
            Call(
                "GET", "/sessions/offloaded", calls.as_list, params=query(limit=limit, after=after)
            )
        )

    def offloaded(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Offloaded sessions with their artifacts' sizes, up to ``limit``, every page."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while len(out) < limit:
            size = min(limit - len(out), 1000)
            page = self.offloaded_page(limit=size, after=after)
            out.extend(page)
            if len(page) < size:
                break
            after = page[-1]["session_id"]
        return out

    # exports and imports (API.md D)

    def export(
        self, session_id: str, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        return self.send(
            calls.start("POST", f"/sessions/{session_id}/exports", wait=wait, key=idempotency_key)
        )

    def exports_page(
        self,
        *,
        session_id: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> Page[dict[str, Any]]:
        return self.send(calls.exports_page(session_id, limit, page_token))

    def iter_exports(
        self, *, session_id: str | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every export artifact (newest first), page after page."""
        yield from self._pages(calls.exports_page(session_id, limit, None))

    def get_export(self, export_id: str) -> dict[str, Any]:
        return self.send(Call("GET", f"/exports/{export_id}", calls.as_dict))

    def delete_export(self, export_id: str) -> dict[str, Any]:
        return self.send(Call("DELETE", f"/exports/{export_id}", calls.as_dict))

    def download_export(self, export_id: str, dest: Path) -> int:
        """The artifact into ``dest``, streamed; its size in bytes."""
        return self._download(f"/exports/{export_id}/download", None, dest)

    def import_file(
        self,
        path: Path,
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Upload an artifact (gzip'd or plain NDJSON), streamed from the file."""
        return self.send(calls.upload(path, new_name=new_name, wait=wait, key=idempotency_key))

    def import_export(
        self,
        export_id: str,
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return self.send(
            calls.import_json({"export_id": export_id}, new_name, wait, idempotency_key)
        )

    def import_document(
        self,
        document: dict[str, Any],
        *,
        new_name: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Import the first service's export document (section A's shape)."""
        return self.send(calls.import_json(document, new_name, wait, idempotency_key))

    # operations (API.md B)

    def get_operation(self, operation_id: str) -> Operation:
        return self.send(Call("GET", f"/operations/{operation_id}", calls.model(Operation)))

    def operations_page(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> Page[Operation]:
        return self.send(calls.operations_page(session_id, kind, status, limit))

    def list_operations(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Operation]:
        """One page of operations, newest first."""
        return (
            self.operations_page(session_id=session_id, kind=kind, status=status, limit=limit)
        ).items

    def iter_operations(
        self,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Operation]:
        """Operations newest first, following ``Link: rel="next"`` when the service pages."""
        yield from self._pages(calls.operations_page(session_id, kind, status, limit))

    def cancel_operation(self, operation_id: str) -> Operation:
        return self.send(calls.cancel(operation_id))

    def wait(
        self,
        operation_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Operation], None] | None = None,
    ) -> Operation:
        """Poll until the operation ends; ``on_progress`` sees every state on the way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            op = self.get_operation(operation_id)
            if on_progress is not None:
                on_progress(op)
            if op.done:
                return op
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"operation {operation_id} still {op.status.value}")
            time.sleep(poll)
