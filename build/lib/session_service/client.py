"""Typed async client of the session service, for the platform's services and the CLI.

It follows the operation contract (200 with the final body, or 202 with an
operation to wait for), sends an Idempotency-Key with every POST that starts
something, and retries what is safe to retry (reads, keyed POSTs, PUT, DELETE)
on connection errors, 429 and 5xx answers of the gateway kind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from session_service.models import (
    MergeRequest,
    Operation,
    SessionCreate,
    SessionModel,
    SessionUpdate,
    SplitRequest,
    StatsUpdate,
)

RETRY_STATUSES = {429, 502, 503, 504}


class ApiError(Exception):
    """A 4xx/5xx answer; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status = status
        self.problem = problem


@dataclass(frozen=True)
class Outcome:
    """What a long-running request answered: the final body, or the running operation."""

    operation_id: str
    done: bool
    result: Any = None
    operation: Operation | None = None


class SessionClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        user_id: str | None = None,
        timeout: float = 60,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if user_id:
            headers["X-User-Id"] = user_id
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.retries = retries

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call, retried with backoff when safe; ApiError for an error answer."""
        headers = kwargs.get("headers") or {}
        if retry is None:
            retry = method != "POST" or "Idempotency-Key" in headers
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt + 1 >= attempts:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt + 1 >= attempts:
                    break
            await asyncio.sleep(min(0.2 * 2**attempt, 5))
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise ApiError(response.status_code, problem)
        return response

    # sessions

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.request("GET", "/health")).json()
        return data

    async def create_session(
        self, body: SessionCreate, *, idempotency_key: str | None = None
    ) -> SessionModel:
        key = idempotency_key or uuid.uuid4().hex
        r = await self.request(
            "POST",
            "/sessions",
            json=body.model_dump(mode="json", exclude_unset=True),
            headers={"Idempotency-Key": key},
        )
        return SessionModel.model_validate(r.json())

    async def get_session(self, session_id: str) -> SessionModel:
        return SessionModel.model_validate(
            (await self.request("GET", f"/sessions/{session_id}")).json()
        )

    async def list_sessions(self, **filters: Any) -> AsyncIterator[SessionModel]:
        """Every matching session, page after page (``Link: rel="next"``)."""
        params: dict[str, Any] | None = {k: v for k, v in filters.items() if v is not None}
        url: str | None = "/sessions"
        while url:
            r = await self.request("GET", url, params=params)
            for item in r.json():
                yield SessionModel.model_validate(item)
            url = r.links.get("next", {}).get("url")
            params = None  # the next link carries every parameter

    async def update_session(self, session_id: str, body: SessionUpdate) -> SessionModel:
        r = await self.request(
            "PUT", f"/sessions/{session_id}", json=body.model_dump(mode="json", exclude_unset=True)
        )
        return SessionModel.model_validate(r.json())

    async def add_stats(self, session_id: str, body: StatsUpdate) -> None:
        # counters add up: a blind retry could count twice, so this one is never retried
        await self.request(
            "PUT",
            f"/sessions/{session_id}/stats",
            retry=False,
            json=body.model_dump(mode="json", exclude_none=True),
        )

    async def upsert_points(self, session_id: str, points: list[dict[str, Any]]) -> int:
        r = await self.request("PUT", f"/sessions/{session_id}/points", json={"points": points})
        count: int = r.json()["upserted"]
        return count

    # operations

    async def _start(
        self,
        method: str,
        path: str,
        *,
        wait: float | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> Outcome:
        headers = dict(kwargs.pop("headers", {}) or {})
        if method == "POST":
            headers["Idempotency-Key"] = key or uuid.uuid4().hex
        if wait is not None:
            headers["Prefer"] = "respond-async" if wait <= 0 else f"wait={int(wait)}"
        r = await self.request(method, path, headers=headers, **kwargs)
        if r.status_code == 202:
            op = Operation.model_validate(r.json())
            return Outcome(operation_id=op.id, done=False, operation=op)
        return Outcome(operation_id=r.headers.get("Operation-Id", ""), done=True, result=r.json())

    async def merge(
        self, body: MergeRequest, *, wait: float | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        return await self._start(
            "POST",
            "/sessions/merge",
            wait=wait,
            key=idempotency_key,
            json=body.model_dump(mode="json", exclude_unset=True),
        )

    async def split(
        self,
        session_id: str,
        body: SplitRequest,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        return await self._start(
            "POST",
            f"/sessions/{session_id}/split",
            wait=wait,
            key=idempotency_key,
            json=body.model_dump(mode="json", exclude_unset=True),
        )

    async def delete_session(
        self, session_id: str, *, permanent: bool = False, wait: float | None = None
    ) -> Outcome:
        return await self._start(
            "DELETE",
            f"/sessions/{session_id}",
            wait=wait,
            params={"permanent": str(permanent).lower()},
        )

    async def export(self, session_id: str, *, wait: float | None = None) -> Outcome:
        return await self._start("POST", f"/sessions/{session_id}/exports", wait=wait)

    async def import_file(
        self, path: Path, *, new_name: str | None = None, wait: float | None = None
    ) -> Outcome:
        ctype = (
            "application/gzip" if path.read_bytes()[:2] == b"\x1f\x8b" else "application/x-ndjson"
        )
        params = {"new_name": new_name} if new_name else {}
        return await self._start(
            "POST",
            "/sessions/import",
            wait=wait,
            params=params,
            content=path.read_bytes(),
            headers={"Content-Type": ctype},
        )

    async def import_export(
        self, export_id: str, *, new_name: str | None = None, wait: float | None = None
    ) -> Outcome:
        params = {"new_name": new_name} if new_name else {}
        return await self._start(
            "POST", "/sessions/import", wait=wait, params=params, json={"export_id": export_id}
        )

    async def download_export(self, export_id: str, dest: Path) -> int:
        async with self.http.stream("GET", f"/exports/{export_id}/download") as r:
            if r.status_code >= 400:
                await r.aread()
                raise ApiError(r.status_code, r.json())
            size = 0
            with dest.open("wb") as out:
                async for chunk in r.aiter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size

    async def get_operation(self, operation_id: str) -> Operation:
        return Operation.model_validate(
            (await self.request("GET", f"/operations/{operation_id}")).json()
        )

    async def list_operations(self, **filters: Any) -> list[Operation]:
        params = {k: v for k, v in filters.items() if v is not None}
        r = await self.request("GET", "/operations", params=params)
        return [Operation.model_validate(o) for o in r.json()]

    async def cancel_operation(self, operation_id: str) -> Operation:
        r = await self.request("POST", f"/operations/{operation_id}/cancel", retry=True)
        return Operation.model_validate(r.json())

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
