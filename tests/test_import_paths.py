"""Paths that code outside this repository used before the layered layout still work:
``python -m session_service.cli`` (scripts, the old bench) and ``session_service.models``
(client code, as the README once showed)."""

from __future__ import annotations

import subprocess
import sys


def test_the_old_models_path_is_the_domain_models() -> None:
    from session_service import models
    from session_service.domain import models as domain

    assert models.MergeRequest is domain.MergeRequest
    assert models.SessionModel is domain.SessionModel


def test_python_dash_m_session_service_cli_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_service.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "dev" in done.stdout and "migrate" in done.stdout
