"""The Temporal worker: every workflow and activity of the service on one task queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from session_service.domain.export_format import DEFAULT_LIMITS, Limits
from session_service.obs import logs
from session_service.settings import Settings
from session_service.stores.artifacts import ArtifactStore
from session_service.stores.database import Postgres
from session_service.stores.retention_rows import RetentionRows
from session_service.stores.vector_store import VectorStore
from session_service.temporal import discovery, registry, schedule
from session_service.temporal.activities import (
    ColdSteps,
    IndexSteps,
    PointSteps,
    RecordSteps,
    RetentionSteps,
    SessionSteps,
    TransferSteps,
)
from session_service.temporal.heartbeat import AutoHeartbeat
from session_service.temporal.steps import declared, implemented_by, step_of
from session_service.temporal.workflows.record import OperationRecord

log = logs.get(__name__)
DEFAULT_INDEX_MIN_POINTS: int = Settings.model_fields["vector_index_min_points"].default
DEFAULT_SHUTDOWN_GRACE = timedelta(
    seconds=Settings.model_fields["worker_shutdown_grace_seconds"].default
)
DEFAULT_IDEMPOTENCY_TTL: timedelta = Settings.model_fields["idempotency_ttl"].default


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register SessionIds, OperationKind and OwnerId on a cluster that lacks them.

    The dev server gets them from its command line; a production cluster gets them
    from the first worker that starts. Returns the names it added.
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
        for key in registry.SEARCH_ATTRIBUTES
        if key.name not in have.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


async def prepare(client: Client, settings: Settings, policies: RetentionRows) -> list[str]:
    """What a starting worker makes sure of: search attributes and the retention schedule."""
    done = [
        f"search attribute {n}"
        for n in await ensure_search_attributes(client, settings.temporal_namespace)
    ]
    if await schedule.ensure(client, settings, await policies.get_policy()):
        done.append(f"schedule {settings.retention_schedule_id}")
    return done


class _LogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with logs.bound(
            operation_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
        ):
            try:
                return await super().execute_activity(input)
            except Exception as exc:
                log.warning("activity failed", error=f"{type(exc).__name__}: {exc}")
                raise


class LogContext(Interceptor):
    """Puts the operation id on every log line an activity writes."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LogContext(next)


def activities(
    pg: Postgres,
    vectors: VectorStore,
    store: ArtifactStore,
    import_limits: Limits = DEFAULT_LIMITS,
    *,
    index_min_points: int = DEFAULT_INDEX_MIN_POINTS,
    keep_artifact: bool = False,
    idempotency_ttl: timedelta = DEFAULT_IDEMPOTENCY_TTL,
) -> list[Callable[..., Any]]:
    """Every step's implementation, bound to its clients: the methods of one instance of
    each activity class (``discovery.activity_classes()``) that implement a step."""
    transfer = TransferSteps(pg, vectors, store, import_limits)
    instances: list[object] = [
        IndexSteps(vectors, index_min_points),
        SessionSteps(pg, vectors, store),
        PointSteps(vectors),
        RetentionSteps(pg),
        transfer,
        ColdSteps(transfer, keep_artifact=keep_artifact),
        RecordSteps(pg.operations, idempotency_ttl),
    ]
    return [fn for obj in instances for fn in implemented_by(obj)]


def _by_step(
    steps: Sequence[Callable[..., Any]], overrides: Sequence[Callable[..., Any]]
) -> dict[str, Callable[..., Any]]:
    """The activities to register, by name: exactly one implementation of every declared
    step, each ``override`` (a step's fake) in place of its step's implementation."""
    names = {s.name for s in declared()}
    by_name: dict[str, Callable[..., Any]] = {}
    for fn in steps:
        step = step_of(fn)
        if step is None or step.name not in names:
            raise TypeError(f"{fn!r} implements no declared step")
        if step.name in by_name:
            raise TypeError(f"step {step.name} is implemented twice: {by_name[step.name]!r} {fn!r}")
        by_name[step.name] = fn
    if missing := sorted(names - set(by_name)):
        raise TypeError(f"steps without an implementation: {missing}")
    for fn in overrides:
        step = step_of(fn)
        if step is None or step.name not in names:
            raise TypeError(f"override {fn!r} fakes no declared step (use steps.X.fake)")
        by_name[step.name] = fn
    return by_name


def build_worker(
    client: Client,
    task_queue: str,
    pg: Postgres,
    vectors: VectorStore,
    store: ArtifactStore,
    *,
    overrides: Sequence[Callable[..., Any]] = (),
    max_concurrent_activities: int = 16,
    import_limits: Limits = DEFAULT_LIMITS,
    index_min_points: int = DEFAULT_INDEX_MIN_POINTS,
    shutdown_grace: timedelta = DEFAULT_SHUTDOWN_GRACE,
    keep_artifact: bool = False,
    idempotency_ttl: timedelta = DEFAULT_IDEMPOTENCY_TTL,
) -> Worker:
    """``overrides`` (``steps.X.fake(fn)``) replace their step's activity (tests inject
    faults this way).

    On shutdown the worker stops polling, then gives activities in flight
    ``shutdown_grace`` to finish before it cancels them: a rolling deploy lets a copy
    step report its progress instead of losing it to a cancel and a retry.
    """
    steps = activities(
        pg,
        vectors,
        store,
        import_limits,
        index_min_points=index_min_points,
        keep_artifact=keep_artifact,
        idempotency_ttl=idempotency_ttl,
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=discovery.workflow_classes(),
        activities=list(_by_step(steps, overrides).values()),
        max_concurrent_activities=max_concurrent_activities,
        interceptors=[LogContext(), AutoHeartbeat(), OperationRecord()],
        graceful_shutdown_timeout=shutdown_grace,
    )


class Clients(Protocol):
    """What a worker runs on: the process's clients and settings (the service's Runtime,
    or a test's). A protocol, so the worker needs nothing from the layers above it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def temporal(self) -> Client: ...
    @property
    def pg(self) -> Postgres: ...
    @property
    def vectors(self) -> VectorStore: ...
    @property
    def artifacts(self) -> ArtifactStore: ...


async def worker_for(runtime: Clients) -> Worker:
    """A worker on the runtime's clients, after preparing the cluster for it."""
    for made in await prepare(runtime.temporal, runtime.settings, runtime.pg.retention):
        log.info("created", what=made)
    return worker_of(runtime)


def worker_of(runtime: Clients, *, overrides: Sequence[Callable[..., Any]] = ()) -> Worker:
    """A worker on the runtime's clients and settings (tests add fault ``overrides``)."""
    return build_worker(
        runtime.temporal,
        runtime.settings.temporal_task_queue,
        runtime.pg,
        runtime.vectors,
        runtime.artifacts,
        overrides=overrides,
        import_limits=Limits.of(runtime.settings),
        index_min_points=runtime.settings.vector_index_min_points,
        shutdown_grace=timedelta(seconds=runtime.settings.worker_shutdown_grace_seconds),
        keep_artifact=runtime.settings.offload_keep_artifact_after_reload,
        idempotency_ttl=runtime.settings.idempotency_ttl,
    )
