"""The process's clients, opened once in the app's lifespan (or by a test) and closed in order."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

import asyncpg
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.runtime import Runtime as TemporalRuntime

from session_service.obs.metrics import OPERATION_BUCKETS, OPERATION_DURATION
from session_service.obs.tracing import Tracing
from session_service.obs.tracing import from_environment as tracing_from_environment
from session_service.services.cold import ColdService
from session_service.services.operations import OperationService
from session_service.services.retention import RetentionService
from session_service.services.sessions import SessionService
from session_service.services.transfer import TransferService
from session_service.settings import Settings
from session_service.stores import migrate
from session_service.stores.artifacts import DirectoryStore
from session_service.stores.database import Postgres
from session_service.stores.postgres import create_pool
from session_service.stores.vector_store import VectorStore, open_vector_store
from session_service.temporal import connection as temporal_connection


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Python's level names as the Temporal core's filter spells them
_CORE_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "WARN": "WARN"}


def temporal_runtime(settings: Settings, metrics_address: str) -> TemporalRuntime:
    """The Temporal SDK's runtime: its metrics on a Prometheus endpoint, and its Rust
    core's logs forwarded to the ``temporalio.core`` Python logger.

    Left alone, the core prints its own ANSI-coloured lines on stderr, which breaks
    a JSON log stream; forwarded, its records go through the same structlog
    formatter as ours, at ``LOG_LEVEL``. Operation durations get buckets up to hours.
    """
    core_level = _CORE_LEVELS.get(settings.log_level.upper(), "ERROR")
    return TemporalRuntime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level=core_level, other_level="ERROR"),
                forwarding=LogForwardingConfig(
                    logger=logging.getLogger("temporalio.core"),
                    append_target_to_name=False,  # the target becomes a key (logs.py)
                    prepend_target_on_message=False,
                    append_log_fields_to_message=False,  # they become keys (logs.py)
                ),
            ),
            metrics=PrometheusConfig(
                bind_address=metrics_address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={OPERATION_DURATION: list(OPERATION_BUCKETS)},
            ),
        )
    )


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    vectors: VectorStore
    temporal: Client
    sdk_metrics: str | None = None  # where the Temporal SDK serves its metrics
    tracing: Tracing | None = None  # on when an OTLP endpoint is set
    pg: Postgres = field(init=False)  # the pool's repositories
    sessions: SessionService = field(init=False)
    operations: OperationService = field(init=False)
    retention: RetentionService = field(init=False)
    artifacts: DirectoryStore = field(init=False)
    transfers: TransferService = field(init=False)
    cold: ColdService = field(init=False)

    def __post_init__(self) -> None:
        self.artifacts = DirectoryStore(self.settings.artifact_dir)
        self.pg = Postgres(self.pool)
        self.sessions = SessionService(self.pg, self.vectors)
        self.operations = OperationService(self.temporal, self.settings, self.sessions)
        self.transfers = TransferService(self.sessions, self.operations, self.artifacts)
        self.cold = ColdService(self.sessions, self.operations)
        self.retention = RetentionService(
            self.temporal, self.settings, self.pg.retention, self.operations
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        vectors: VectorStore | None = None,
        run_migrations: bool = True,
        traced: Tracing | None = None,
    ) -> Runtime:
        """``traced`` (tests) replaces the tracing the environment asks for, if any."""
        traced = traced or tracing_from_environment()
        if not settings.database_url or not settings.temporal_address:
            raise RuntimeError("DATABASE_URL and TEMPORAL_ADDRESS must be set (or use `dev`)")
        pool = await create_pool(settings.database_url, settings.pg_pool_min, settings.pg_pool_max)
        try:
            if run_migrations:
                async with pool.acquire() as conn:
                    await migrate.migrate(conn)
            sdk_metrics = settings.temporal_metrics_address or f"127.0.0.1:{_free_port()}"
            temporal = await temporal_connection.connect(
                settings,
                data_converter=pydantic_data_converter,
                runtime=temporal_runtime(settings, sdk_metrics),
                interceptors=traced.interceptors() if traced else [],
            )
            if vectors is None:
                vectors = await open_vector_store(settings)
        except BaseException:
            await pool.close()
            raise
        return cls(
            settings=settings,
            pool=pool,
            vectors=vectors,
            temporal=temporal,
            sdk_metrics=sdk_metrics.replace("0.0.0.0", "127.0.0.1"),
            tracing=traced,
        )

    async def close(self, *, close_vectors: bool = True) -> None:
        await self.pool.close()
        if close_vectors:
            self.vectors.close()
