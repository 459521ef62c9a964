"""The Temporal worker: every workflow and activity of the service on one task queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from session_service.activities import PointSteps, SessionSteps
from session_service.stores.repository import SessionRepository
from session_service.stores.vector_store import VectorStore
from session_service.workflows import ALL_WORKFLOWS


def activities(repo: SessionRepository, vectors: VectorStore) -> list[Callable[..., Any]]:
    steps: list[Any] = [*SessionSteps(repo, vectors).all(), *PointSteps(vectors).all()]
    return steps


def build_worker(
    client: Client,
    task_queue: str,
    repo: SessionRepository,
    vectors: VectorStore,
    *,
    overrides: Sequence[Callable[..., Any]] = (),
    max_concurrent_activities: int = 16,
) -> Worker:
    """``overrides`` replace activities of the same name (tests inject faults this way)."""
    by_name: dict[str, Callable[..., Any]] = {}
    for fn in [*activities(repo, vectors), *overrides]:
        defn = getattr(fn, "__temporal_activity_definition")
        by_name[defn.name] = fn
    return Worker(
        client,
        task_queue=task_queue,
        workflows=ALL_WORKFLOWS,
        activities=list(by_name.values()),
        max_concurrent_activities=max_concurrent_activities,
    )
