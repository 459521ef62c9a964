"""Migrations apply once and are idempotent; `session-service migrate` says so."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from session_service.settings import Settings
from session_service.stores import migrate


async def test_migrate_twice_applies_nothing_more(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await migrate.migrate(conn) == []
        numbers = [r["number"] for r in await conn.fetch("SELECT number FROM schema_migrations")]
        assert numbers == [n for n, _, _ in migrate.available()]
    finally:
        await conn.close()


def test_migrate_command(settings: Settings) -> None:
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    out = subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "up to date" in out.stdout
