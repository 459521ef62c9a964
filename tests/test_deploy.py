"""docker-compose.yml and the Dockerfile, checked against what the code reads.

No Docker engine runs here, so the stack is validated without running it:
every service, image, port, env var, command and dependency.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from session_service.cli import build_parser
from session_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    "postgres",
    "qdrant",
    "temporal",
    "temporal-admin-tools",
    "temporal-ui",
    "migrate",
    "api",
    "worker",
}
OURS = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


def test_every_service_is_there_with_an_image_or_our_build(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "image" in svc:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", svc["image"]), f"{name}: pin a tag"
        else:
            assert svc["build"] == "." and (ROOT / "Dockerfile").exists()


def test_our_services_read_only_known_settings(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in OURS:
        env = env_of(compose["services"][name])
        assert set(env) <= known, f"{name} sets what the code doesn't read: {set(env) - known}"
        for required in ("DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL"):
            assert required in env, f"{name} lacks {required}"
        db = urlparse(
            env["DATABASE_URL"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw")
        )
        assert db.hostname == "postgres" and db.port == 5432
        assert urlparse(env["QDRANT_URL"]).hostname == "qdrant"
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    parser = build_parser()
    expected = {"migrate": "migrate", "api": "api", "worker": "worker"}
    for name, command in expected.items():
        argv = compose["services"][name]["command"]
        assert argv[0] == "session-service"
        args = parser.parse_args(argv[1:])
        assert args.command == command
    api = parser.parse_args(compose["services"]["api"]["command"][1:])
    assert f"{api.port}:{api.port}" in compose["services"]["api"]["ports"]


def test_dependencies_exist_and_wait_for_the_right_state(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = cond["condition"]
            assert wanted in (
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            )
            if wanted == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert {"temporal", "qdrant"} <= set(deps)
    assert "postgres" in services["migrate"]["depends_on"]


def test_long_running_services_have_healthchecks_and_shared_exports(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("postgres", "qdrant", "temporal", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert "exports:/data/exports" in services["api"]["volumes"]
    assert "exports:/data/exports" in services["worker"]["volumes"]
    assert env_of(services["worker"])["TEMPORAL_METRICS_ADDRESS"].endswith(":9464")
    assert "9464" in services["worker"]["healthcheck"]["test"][-1]
    assert set(compose["volumes"]) == {"pgdata", "qdrant", "exports"}


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/health" in text
    assert re.search(r"^EXPOSE .*8087", text, re.M)
    assert "[embedded]" not in text and "[dev]" not in text  # production deps only
    assert "session-service" in text.split("CMD")[-1]
