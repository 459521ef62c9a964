"""Every call of the API as data: what to send and how to read the answer.

Both clients (``SyncSessionClient`` and ``SessionClient``) build their
requests here and only differ in how they send them, so a path, a header or a
parsing rule is written once. A ``Call`` says whether it may be retried
(``retry``); see ``retry.py`` for the rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from session_service.domain.models import (
    ModelType,
    Operation,
    PointsPage,
    RetentionPolicy,
    SessionCreate,
    SessionModel,
    SessionUpdate,
    StatsUpdate,
)

T = TypeVar("T")

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Outcome:
    """What a long-running request answered: the final body, or the running operation."""

    operation_id: str
    done: bool
    result: Any = None
    operation: Operation | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the URL of the next one (``Link: rel="next"``)."""

    items: list[T]
    next_url: str | None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    upload: Path | None = None  # streamed from the file, never read whole
    retry: bool | None = None  # None: by method and Idempotency-Key

    @property
    def retriable(self) -> bool:
        if self.retry is not None:
            return self.retry
        return self.method != "POST" or "Idempotency-Key" in self.headers


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; booleans as the service spells them."""
    return {
        k: (str(v).lower() if isinstance(v, bool) else v)
        for k, v in params.items()
        if v is not None
    }


def body(model: BaseModel) -> Any:
    return model.model_dump(mode="json", exclude_unset=True)


def model(cls: type[T]) -> Callable[[httpx.Response], T]:
    def parse(r: httpx.Response) -> T:
        return cls.model_validate(r.json())  # type: ignore[attr-defined, no-any-return]

    return parse


def as_dict(r: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = r.json()
    return data


def as_list(r: httpx.Response) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = r.json()
    return data


def page_of(cls: type[T] | None) -> Callable[[httpx.Response], Page[T]]:
    def parse(r: httpx.Response) -> Page[T]:
        raw = r.json()
        items = [cls.model_validate(i) for i in raw] if cls is not None else raw  # type: ignore[attr-defined]
        return Page(items=items, next_url=r.links.get("next", {}).get("url"))

    return parse


def outcome(r: httpx.Response) -> Outcome:
    if r.status_code == 202:
        op = Operation.model_validate(r.json())
        return Outcome(operation_id=op.id, done=False, operation=op)
    return Outcome(operation_id=r.headers.get("Operation-Id", ""), done=True, result=r.json())


def start(
    method: str,
    path: str,
    *,
    wait: float | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Call[Outcome]:
    """A long-running request (API.md B): a POST gets an Idempotency-Key (so it can be
    retried); ``wait`` <= 0 asks for 202 at once, N for up to N seconds."""
    h = dict(headers or {})
    if method == "POST":
        h["Idempotency-Key"] = key or uuid.uuid4().hex
    if wait is not None:
        h["Prefer"] = "respond-async" if wait <= 0 else f"wait={int(wait)}"
    return Call(method, path, outcome, headers=h, **kwargs)


def sniff_type(path: Path) -> str:
    """gzip or NDJSON, from the file's first two bytes only."""
    with path.open("rb") as f:
        return "application/gzip" if f.read(2) == b"\x1f\x8b" else "application/x-ndjson"


def upload(
    path: Path, *, new_name: str | None, wait: float | None, key: str | None
) -> Call[Outcome]:
    headers = {"Content-Type": sniff_type(path), "Content-Length": str(path.stat().st_size)}
    return start(
        "POST",
        "/sessions/import",
        wait=wait,
        key=key,
        headers=headers,
        params=query(new_name=new_name),
        upload=path,
    )


# builders used by both clients


def plain(method: str, path: str, **kwargs: Any) -> Call[dict[str, Any]]:
    return Call(method, path, as_dict, **kwargs)


def create_session(b: SessionCreate, key: str | None) -> Call[SessionModel]:
    return Call(
        "POST",
        "/sessions",
        model(SessionModel),
        json=body(b),
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


def sessions_page(
    status: str | None,
    owner_id: str | None,
    tags: str | None,
    limit: int | None,
    page_token: str | None,
) -> Call[Page[SessionModel]]:
    params = query(status=status, owner_id=owner_id, tags=tags, limit=limit, page_token=page_token)
    return Call("GET", "/sessions", page_of(SessionModel), params=params)


def update_session(session_id: str, b: SessionUpdate, if_match: str | None) -> Call[SessionModel]:
    headers = {"If-Match": if_match} if if_match else {}
    return Call(
        "PUT", f"/sessions/{session_id}", model(SessionModel), json=body(b), headers=headers
    )


def delete_session(session_id: str, permanent: bool, wait: float | None) -> Call[Outcome]:
    return start(
        "DELETE",
        f"/sessions/{session_id}",
        wait=wait if permanent else None,
        params=query(permanent=permanent),
    )


def share(
    session_id: str, user_ids: list[str], permissions: list[str] | None
) -> Call[SessionModel]:
    payload: dict[str, Any] = {"user_ids": user_ids}
    if permissions:
        payload["permissions"] = permissions
    # sharing twice shares once (users are appended once each): safe to repeat
    return Call(
        "POST", f"/sessions/{session_id}/share", model(SessionModel), json=payload, retry=True
    )


def add_stats(session_id: str, b: StatsUpdate) -> Call[dict[str, Any]]:
    # counters add up: a blind retry could count twice, so this one is never retried
    return Call(
        "PUT",
        f"/sessions/{session_id}/stats",
        as_dict,
        json=b.model_dump(mode="json", exclude_none=True),
        retry=False,
    )


def model_usage(
    session_id: str, model_type: ModelType | str, model_name: str
) -> Call[dict[str, Any]]:
    # model_switches + 1 each time: not safe to repeat
    return Call(
        "PUT",
        f"/sessions/{session_id}/model-usage",
        as_dict,
        params={"model_type": str(model_type), "model_name": model_name},
        retry=False,
    )


def compare(session_ids: list[str]) -> Call[dict[str, Any]]:
    # a read sent as POST (the web UI's form)
    return Call("POST", "/sessions/compare", as_dict, json={"session_ids": session_ids}, retry=True)


def set_policy(policy: RetentionPolicy) -> Call[dict[str, Any]]:
    return Call("PUT", "/sessions/retention-policy", as_dict, json=body(policy))


def cleanup(
    policy: RetentionPolicy | None, dry_run: bool, wait: float | None, key: str | None
) -> Call[Outcome]:
    return start(
        "POST",
        "/sessions/cleanup",
        wait=wait,
        key=key,
        json=body(policy) if policy is not None else {},
        params=query(dry_run=dry_run),
    )


def upsert_points(session_id: str, points: list[dict[str, Any]]) -> Call[int]:
    return Call(
        "PUT",
        f"/sessions/{session_id}/points",
        lambda r: int(r.json()["upserted"]),
        json={"points": points},
    )


def get_points(
    session_id: str, limit: int, offset: int | str | None, with_vectors: bool
) -> Call[PointsPage]:
    return Call(
        "GET",
        f"/sessions/{session_id}/points",
        model(PointsPage),
        params=query(limit=limit, offset=offset, with_vectors=with_vectors),
    )


def delete_points(session_id: str, ids: list[int | str]) -> Call[int]:
    # deleting the same ids twice leaves the same state: safe to repeat
    return Call(
        "POST",
        f"/sessions/{session_id}/points/delete",
        lambda r: int(r.json()["deleted"]),
        json={"ids": ids},
        retry=True,
    )


def query_points(
    session_id: str,
    vector: list[float],
    limit: int,
    filter: dict[str, Any] | None,
    score_threshold: float | None,
    with_payload: bool,
    with_vectors: bool,
) -> Call[list[dict[str, Any]]]:
    payload: dict[str, Any] = {
        "vector": vector,
        "limit": limit,
        "with_payload": with_payload,
        "with_vectors": with_vectors,
    }
    if filter is not None:
        payload["filter"] = filter
    if score_threshold is not None:
        payload["score_threshold"] = score_threshold
    return Call(
        "POST",
        f"/sessions/{session_id}/points/query",
        lambda r: list(r.json()["points"]),
        json=payload,
        retry=True,  # a read
    )


def exports_page(
    session_id: str | None, limit: int | None, page_token: str | None
) -> Call[Page[dict[str, Any]]]:
    params = query(session_id=session_id, limit=limit, page_token=page_token)
    return Call("GET", "/exports", page_of(None), params=params)


def import_json(
    document: dict[str, Any], new_name: str | None, wait: float | None, key: str | None
) -> Call[Outcome]:
    return start(
        "POST",
        "/sessions/import",
        wait=wait,
        key=key,
        json=document,
        params=query(new_name=new_name),
    )


def operations_page(
    session_id: str | None, kind: str | None, status: str | None, limit: int | None
) -> Call[Page[Operation]]:
    # later pages: the iterators follow the service's Link: rel="next" (its page_token)
    params = query(session_id=session_id, kind=kind, status=status, limit=limit)
    return Call("GET", "/operations", page_of(Operation), params=params)


def cancel(operation_id: str) -> Call[Operation]:
    # asking twice is asking once
    return Call("POST", f"/operations/{operation_id}/cancel", model(Operation), retry=True)
