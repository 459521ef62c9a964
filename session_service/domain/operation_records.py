"""What an operation's record holds when it starts and when it ends (the ``operations``
table): written by the API and by the operation's own workflow, read by the listing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class OperationStart(BaseModel):
    operation_id: str
    kind: str
    run_id: str
    session_ids: list[str] = Field(default_factory=list)
    owner_id: str | None = None
    started_by: str | None = None
    cancel_permission: str | None = None
    cancel_ids: list[str] = Field(default_factory=list)
    summary: str | None = None


class OperationEnd(BaseModel):
    operation_id: str
    kind: str
    status: str  # succeeded, failed or cancelled
    run_id: str | None = None
    session_ids: list[str] = Field(default_factory=list)
    progress: dict[str, Any] | None = None
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
