"""Names the service gives things: collections, artifacts, workflow ids.

Pure functions of their arguments (standard library only): workflows compute them
in the sandbox, activities and stores use the same ones.
"""

from __future__ import annotations

import hashlib
import uuid


def collection_name_for(session_id: str) -> str:
    """The vector collection of a session."""
    return f"session_{uuid.UUID(session_id).hex}"


def reload_workflow_id(session_id: str) -> str:
    """One reload per session at a time: every caller (a request's first use, a merge or
    split, an operator) starts or joins the workflow of this id."""
    return f"reload-{uuid.UUID(session_id).hex}"


def offload_artifact_key(session_id: str, operation_id: str) -> str:
    """Where an offload writes: per operation, so a retried offload never meets an older
    offload's file, and never an export's (whose keys are UUIDs)."""
    op = hashlib.sha256(operation_id.encode()).hexdigest()[:16]
    return f"offload-{uuid.UUID(session_id).hex}-{op}.ndjson.gz"


def part_key(key: str) -> str:
    """The file an artifact is written to before it gets its name."""
    return f"{key}.part"


__all__ = ["collection_name_for", "offload_artifact_key", "part_key", "reload_workflow_id"]
