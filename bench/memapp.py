"""The baseline of bench.api: the platform's old in-memory design of the stats endpoint.

Sessions live in a Python dict of session dicts. ``PUT /sessions/{id}/stats``
validates the body with the service's own ``StatsUpdate`` model, adds the
counters, merges ``metadata``, stamps ``last_processing_time`` and bumps
``version``, then answers with the service's ``Message`` - so the only
difference from the service is where the session lives. Nothing is durable.

Served by uvicorn with the service's settings (one worker, default loop, no
access log, ``log_config=None``): ``python -m bench.memapp --port P``. It
writes no log line per request (the old design did not); the service does.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from session_service.domain.models import Message, StatsUpdate

COUNTERS = ("urls_processed", "content_analyzed", "clusters_generated", "embeddings_created")


class SessionIn(BaseModel):
    name: str


def new_session(name: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "created_at": now,
        "updated_at": now,
        "processing_stats": dict.fromkeys(COUNTERS, 0) | {"last_processing_time": None},
        "metadata": {},
        "version": 1,
    }


def apply_stats(session: dict[str, Any], body: StatsUpdate) -> None:
    """What the old handler did: add, merge, stamp. No await, so no lost update."""
    now = datetime.now(UTC)
    stats = session["processing_stats"]
    for counter in COUNTERS:
        stats[counter] += getattr(body, counter) or 0
    stats["last_processing_time"] = now
    session["metadata"].update(body.metadata or {})
    session["metadata"]["last_stats_update"] = now.isoformat()
    session["version"] += 1
    session["updated_at"] = now


def create_app() -> FastAPI:
    app = FastAPI(title="In-memory sessions (bench baseline)")
    sessions: dict[str, dict[str, Any]] = {}

    def find(session_id: str) -> dict[str, Any]:
        session = sessions.get(session_id)
        if session is None:
            raise HTTPException(404, f"session {session_id} not found")
        return session

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/sessions")
    async def create(body: SessionIn) -> dict[str, Any]:
        session = new_session(body.name)
        sessions[session["id"]] = session
        return session

    @app.get("/sessions/{session_id}")
    async def get(session_id: str) -> dict[str, Any]:
        return find(session_id)

    @app.put("/sessions/{session_id}/stats", response_model=Message)
    async def put_stats(session_id: str, body: StatsUpdate) -> Message:
        apply_stats(find(session_id), body)
        return Message(message="Session statistics updated")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        lifespan="on",
        log_config=None,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
