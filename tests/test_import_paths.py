"""Paths that code outside this repository used before the layered layout still work
(and the port picker the dev stack and its tests share):
``python -m session_service.cli`` (scripts, the old bench) and ``session_service.models``
(client code, as the README once showed)."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


def test_free_port_never_hands_out_a_port_twice_nor_an_avoided_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two picks for one dev stack (the API's port, Temporal's UI, HTTP and metrics ports)
    must differ, or whichever binds second fails: the CI once saw the API's port answered
    by Temporal's UI. The kernel is made to offer the same port again (a fault injected:
    it may, once the probe socket is closed)."""
    from session_service.cli import embedded_stack

    offers = iter([41000, 41000, 41001, 41001, 41002, 41003])

    class Probe:
        def __enter__(self) -> Probe:
            self.port = next(offers)
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(embedded_stack.socket, "socket", Probe)
    monkeypatch.setattr(embedded_stack, "_HANDED_OUT", set())
    first = embedded_stack.free_port()
    second = embedded_stack.free_port()
    third = embedded_stack.free_port(avoid={41002})
    assert (first, second, third) == (41000, 41001, 41003)
