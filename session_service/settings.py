"""One settings object, read once from the environment.

Anything set explicitly (``DATABASE_URL``, ``TEMPORAL_ADDRESS``, ``QDRANT_URL``)
replaces the embedded part it names; everything unset is started by
``session-service dev`` under the data dir.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IMPORT_INFLATED_BYTES = 32 * 1024**3
DEFAULT_IMPORT_LINE_BYTES = 16 * 1024**2
PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "example", "xxx"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_host: str | None = None
    qdrant_port: int = 6333
    qdrant_api_key: str | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "session-service"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    retention_schedule_id: str = "session-retention"
    temporal_metrics_address: str | None = Field(
        default=None,
        description="host:port where the Temporal SDK serves its Prometheus metrics; "
        "unset: a free loopback port, merged into the API's /metrics",
    )
    log_format: str | None = Field(default=None, pattern="^(json|console)$")
    log_level: str = "INFO"
    session_api_keys: str | None = Field(
        default=None, description="Comma-separated bearer tokens; unset means no API key check."
    )
    sync_wait_seconds: float = Field(default=10.0, ge=0, le=300)
    idempotency_ttl: timedelta = Field(
        default=timedelta(hours=24),
        description="how long an Idempotency-Key is remembered (seconds, or ISO 8601 like "
        "PT24H); older keys are deleted by the retention schedule's sweep",
    )
    data_dir: Path = Path(".data")
    export_dir: Path | None = None
    op_batch_size: int = Field(default=1024, ge=1, le=10_000)
    export_batch_size: int = Field(
        default=4096,
        ge=1,
        le=100_000,
        description="points per scroll batch of an export: local-mode scrolls sort every id "
        "per call, so fewer, bigger calls read faster",
    )
    op_batches_per_call: int = Field(default=16, ge=1, le=1000)
    op_heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    op_maximum_attempts: int = Field(default=5, ge=1)
    worker_shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="on SIGTERM, how long the worker lets activities in flight finish (a "
        "copy step stops at its next batch and reports) before cancelling them",
    )
    vector_open_shards: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Edge shards (session collections) kept open at once; the least "
        "recently used beyond this are closed and reopened on their next use",
    )
    vector_index_min_points: int = Field(
        default=10_000,
        ge=0,
        description="after a merge, split or import, build the search index (HNSW) of a new "
        "Edge collection holding at least this many points; smaller ones are scanned",
    )
    max_body_bytes: int = 32 * 1024 * 1024
    max_import_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="largest artifact upload, as sent (413 past it)"
    )
    max_import_inflated_bytes: int = Field(
        default=DEFAULT_IMPORT_INFLATED_BYTES,
        ge=1,
        description="most bytes an artifact may inflate to (422)",
    )
    max_import_line_bytes: int = Field(
        default=DEFAULT_IMPORT_LINE_BYTES, ge=1024, description="longest line of an artifact (422)"
    )
    pg_pool_min: int = 2
    pg_pool_max: int = 20
    # Securing the Temporal connection (session_service/temporal/connection.py uses them).
    temporal_tls: bool | None = Field(
        default=None,
        description="TLS to Temporal; unset: on when any TLS material or TEMPORAL_API_KEY is set",
    )
    temporal_tls_server_ca_cert_path: Path | None = None
    temporal_tls_server_ca_cert_data: str | None = Field(default=None, description="PEM")
    temporal_tls_server_name: str | None = Field(
        default=None, description="name the server certificate is checked against (and SNI)"
    )
    temporal_tls_client_cert_path: Path | None = None
    temporal_tls_client_cert_data: str | None = Field(default=None, description="PEM")
    temporal_tls_client_key_path: Path | None = None
    temporal_tls_client_key_data: SecretStr | None = Field(default=None, description="PEM")
    temporal_api_key: SecretStr | None = Field(
        default=None, description="sent as `authorization: Bearer ...` (Temporal Cloud)"
    )

    # cold sessions (API.md section G)
    offload_keep_artifact_after_reload: bool = Field(
        default=False,
        description="keep an offloaded session's artifact after it is reloaded (it is "
        "deleted by default: the live collection holds the points again)",
    )

    @field_validator("session_api_keys")
    @classmethod
    def _no_placeholder_keys(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for key in value.split(","):
            if key.strip().lower() in PLACEHOLDER_KEYS or len(key.strip()) < 8:
                raise ValueError(
                    "SESSION_API_KEYS holds a placeholder or a key shorter than 8 characters"
                )
        return value

    @field_validator(
        "temporal_tls_server_ca_cert_path",
        "temporal_tls_server_ca_cert_data",
        "temporal_tls_server_name",
        "temporal_tls_client_cert_path",
        "temporal_tls_client_cert_data",
        "temporal_tls_client_key_path",
        "temporal_tls_client_key_data",
        "temporal_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``FOO=`` in a compose file) means unset, not the path ``.``."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _temporal_tls_consistent(self) -> Settings:
        """Contradictions in the Temporal TLS settings are refused at start, by name."""
        pairs = [
            (
                "SERVER_CA_CERT",
                self.temporal_tls_server_ca_cert_path,
                self.temporal_tls_server_ca_cert_data,
            ),
            ("CLIENT_CERT", self.temporal_tls_client_cert_path, self.temporal_tls_client_cert_data),
            ("CLIENT_KEY", self.temporal_tls_client_key_path, self.temporal_tls_client_key_data),
        ]
        for name, path, data in pairs:
            if path is not None and data is not None:
                raise ValueError(
                    f"set TEMPORAL_TLS_{name}_PATH or TEMPORAL_TLS_{name}_DATA, not both"
                )
        has_cert = self.temporal_tls_client_cert_path or self.temporal_tls_client_cert_data
        has_key = self.temporal_tls_client_key_path or self.temporal_tls_client_key_data
        if has_cert and not has_key:
            raise ValueError(
                "TEMPORAL_TLS_CLIENT_CERT_PATH (or _DATA) is set without "
                "TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA): a client certificate needs its key"
            )
        if has_key and not has_cert:
            raise ValueError(
                "TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA) is set without "
                "TEMPORAL_TLS_CLIENT_CERT_PATH (or _DATA): a client key needs its certificate"
            )
        material = [
            f"TEMPORAL_TLS_{name}_{'PATH' if path is not None else 'DATA'}"
            for name, path, data in pairs
            if path is not None or data is not None
        ]
        if self.temporal_tls_server_name:
            material.append("TEMPORAL_TLS_SERVER_NAME")
        if self.temporal_tls is False and material:
            raise ValueError(f"TEMPORAL_TLS is false but {', '.join(material)} is set")
        return self

    @property
    def temporal_tls_enabled(self) -> bool:
        """Explicit ``TEMPORAL_TLS``, else on with any TLS material or an API key
        (Temporal Cloud takes API keys over TLS only)."""
        if self.temporal_tls is not None:
            return self.temporal_tls
        return any(
            value is not None
            for value in (
                self.temporal_tls_server_ca_cert_path,
                self.temporal_tls_server_ca_cert_data,
                self.temporal_tls_server_name,
                self.temporal_tls_client_cert_path,
                self.temporal_tls_client_cert_data,
                self.temporal_api_key,
            )
        )

    @property
    def api_keys(self) -> frozenset[str]:
        if not self.session_api_keys:
            return frozenset()
        return frozenset(k.strip() for k in self.session_api_keys.split(",") if k.strip())

    @property
    def effective_qdrant_url(self) -> str | None:
        """``QDRANT_URL``, or the older ``QDRANT_HOST``/``QDRANT_PORT`` pair."""
        if self.qdrant_url:
            return self.qdrant_url
        if self.qdrant_host:
            return f"http://{self.qdrant_host}:{self.qdrant_port}"
        return None

    @property
    def artifact_dir(self) -> Path:
        """``EXPORT_DIR``, or ``<data-dir>/exports`` in the embedded stack."""
        return self.export_dir or self.data_dir / "exports"

    @property
    def vector_backend(self) -> str:
        """``server`` with a Qdrant URL, else ``edge`` (shards under the data dir)."""
        return "server" if self.effective_qdrant_url else "edge"

    @property
    def vector_dir(self) -> Path:
        """Where Edge keeps one shard per session collection."""
        return self.data_dir / "vectors"

    @property
    def qdrant_path(self) -> Path:
        """The local-mode folder of older releases, migrated into Edge at start."""
        return self.data_dir / "qdrant"
