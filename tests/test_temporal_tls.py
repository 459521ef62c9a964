"""Reaching a secured Temporal: TLS with our CA, the server name, mTLS and an API key.

The dev server has no TLS of its own, so each test puts ``tests/tls_proxy.py`` in
front of it: a TLS-terminating proxy with a certificate from a CA the test makes
(``trustme``), optionally requiring a client certificate. The proxy decodes the
request headers it forwards, which shows what went through it (the worker's polls,
the API's workflow starts, the API key).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import SecretStr, ValidationError

from session_service.api.app import create_app
from session_service.services.runtime import Runtime
from session_service.settings import Settings
from session_service.temporal.connection import (
    TemporalConnectionError,
    connect,
    connect_args,
    explain,
)
from session_service.temporal.worker import worker_of
from tests.conftest import Factory
from tests.tls_proxy import TlsProxy

SERVER_NAME = "temporal.test"


@dataclass
class Pki:
    """A CA that signs the proxy's certificate, one that signed nothing of ours, and a
    CA for client certificates, each also as files."""

    dir: Path
    ca: trustme.CA
    wrong_ca: trustme.CA
    client_ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    stranger: trustme.LeafCert  # a client certificate from a CA the proxy doesn't trust

    def file(self, name: str, pem: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(pem)
        return path

    @property
    def ca_path(self) -> Path:
        return self.file("ca.pem", self.ca.cert_pem.bytes())

    @property
    def wrong_ca_path(self) -> Path:
        return self.file("wrong-ca.pem", self.wrong_ca.cert_pem.bytes())

    @staticmethod
    def chain(leaf: trustme.LeafCert) -> bytes:
        return b"".join(blob.bytes() for blob in leaf.cert_chain_pems)

    def context(self, *, require_client_cert: bool = False) -> Any:
        return TlsProxy.server_context(
            self.chain(self.server),
            self.server.private_key_pem.bytes(),
            client_ca_pem=self.client_ca.cert_pem.bytes() if require_client_cert else None,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, wrong_ca, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    return Pki(
        dir=tmp_path_factory.mktemp("pki"),
        ca=ca,
        wrong_ca=wrong_ca,
        client_ca=client_ca,
        server=ca.issue_cert(SERVER_NAME),
        client=client_ca.issue_cert("session-service-worker"),
        stranger=wrong_ca.issue_cert("session-service-worker"),
    )


@pytest.fixture
def proxy(settings: Settings, pki: Pki) -> Iterator[TlsProxy]:
    assert settings.temporal_address
    with TlsProxy(settings.temporal_address, pki.context()) as p:
        yield p


@pytest.fixture
def mtls_proxy(settings: Settings, pki: Pki) -> Iterator[TlsProxy]:
    assert settings.temporal_address
    with TlsProxy(settings.temporal_address, pki.context(require_client_cert=True)) as p:
        yield p


def through(settings: Settings, proxy: TlsProxy, **tls: Any) -> Settings:
    """The shared settings, with Temporal reached through ``proxy`` and ``tls`` set, validated
    as the environment would be."""
    base = settings.model_dump(exclude={"temporal_address"})
    return Settings(**{**base, "temporal_address": proxy.address, **tls})


def called(proxy: TlsProxy) -> set[str]:
    """The gRPC methods the proxy forwarded."""
    return {path.rsplit("/", 1)[-1] for path in proxy.headers_named(":path")}


# the service end to end over TLS


@pytest.fixture
async def tls_client(
    settings: Settings, runtime: Runtime, proxy: TlsProxy, pki: Pki
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker of their own, both connected to Temporal only through the proxy."""
    own = through(
        settings,
        proxy,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
        temporal_task_queue=f"tls-{uuid.uuid4().hex[:8]}",
    )
    rt = await Runtime.open(own, vectors=runtime.vectors, run_migrations=False)
    app = create_app(own, rt)
    try:
        async with worker_of(rt):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t", timeout=120
            ) as c:
                yield c
    finally:
        await rt.close(close_vectors=False)


async def test_a_merge_runs_through_tls_with_our_ca(
    tls_client: httpx.AsyncClient, proxy: TlsProxy
) -> None:
    make = Factory(tls_client)
    config = {"configuration": {"vector_size": 4}}
    a, b = await make.session(**config), await make.session(**config)
    await make.points(a["id"], [1, 2, 3])
    await make.points(b["id"], [3, 4])
    r = await tls_client.post(
        "/sessions/merge", json={"source_session_ids": [a["id"], b["id"]], "target_name": "m"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["merged_point_count"] == 4
    op = (await tls_client.get(f"/operations/{r.headers['Operation-Id']}")).json()
    assert op["status"] == "succeeded"
    # The API's start and the worker's polls crossed the TLS proxy (there is no other way).
    assert {"StartWorkflowExecution", "PollWorkflowTaskQueue", "PollActivityTaskQueue"} <= called(
        proxy
    )
    assert proxy.handshake_errors == []


# refusals, each with the sentence an operator acts on


async def test_a_wrong_ca_is_refused_naming_the_setting(
    settings: Settings, proxy: TlsProxy, pki: Pki
) -> None:
    bad = through(
        settings,
        proxy,
        temporal_tls_server_ca_cert_path=pki.wrong_ca_path,
        temporal_tls_server_name=SERVER_NAME,
    )
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(bad)
    assert str(caught.value) == (
        f"TLS handshake with temporal at {proxy.address} failed: the server's certificate "
        f"is not signed by TEMPORAL_TLS_SERVER_CA_CERT_PATH ({pki.wrong_ca_path})"
    )
    assert proxy.requests == []


async def test_the_system_cas_refuse_a_private_ca(settings: Settings, proxy: TlsProxy) -> None:
    """An API key alone switches TLS on (Temporal Cloud's way), against the system's CAs."""
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(through(settings, proxy, temporal_api_key="tc-key-1234"))
    assert "not signed by a CA this machine trusts: set TEMPORAL_TLS_SERVER_CA_CERT_PATH" in str(
        caught.value
    )


async def test_a_certificate_for_another_name_asks_for_the_server_name(
    settings: Settings, proxy: TlsProxy, pki: Pki
) -> None:
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(through(settings, proxy, temporal_tls_server_ca_cert_path=pki.ca_path))
    assert str(caught.value).endswith(
        f"the server's certificate is not valid for 127.0.0.1 (it names {SERVER_NAME}): "
        "set TEMPORAL_TLS_SERVER_NAME to a name it carries"
    )


async def test_tls_to_a_plaintext_server_says_so(settings: Settings, pki: Pki) -> None:
    bad = settings.model_copy(update={"temporal_tls": True})
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(bad)
    assert "the server does not speak TLS on this port" in str(caught.value)


async def test_nothing_listening_is_connection_refused(settings: Settings) -> None:
    from session_service.cli.embedded_stack import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(settings.model_copy(update={"temporal_address": address}))
    assert str(caught.value) == (
        f"cannot connect to temporal at {address}: connection refused (check TEMPORAL_ADDRESS)"
    )


# mTLS


async def test_mtls_with_a_client_certificate_from_files(
    settings: Settings, mtls_proxy: TlsProxy, pki: Pki
) -> None:
    good = through(
        settings,
        mtls_proxy,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
        temporal_tls_client_cert_path=pki.file("client.pem", pki.chain(pki.client)),
        temporal_tls_client_key_path=pki.file("client.key", pki.client.private_key_pem.bytes()),
    )
    client = await connect(good)
    await client.count_workflows()
    assert "CountWorkflowExecutions" in called(mtls_proxy)
    assert mtls_proxy.handshake_errors == []


async def test_mtls_with_pem_data_from_the_environment(
    settings: Settings, mtls_proxy: TlsProxy, pki: Pki
) -> None:
    good = through(
        settings,
        mtls_proxy,
        temporal_tls_server_ca_cert_data=pki.ca.cert_pem.bytes().decode(),
        temporal_tls_server_name=SERVER_NAME,
        temporal_tls_client_cert_data=pki.chain(pki.client).decode(),
        temporal_tls_client_key_data=pki.client.private_key_pem.bytes().decode(),
    )
    client = await connect(good)
    await client.count_workflows()
    assert "CountWorkflowExecutions" in called(mtls_proxy)


async def test_mtls_without_a_client_certificate_is_refused_with_what_to_set(
    settings: Settings, mtls_proxy: TlsProxy, pki: Pki
) -> None:
    bad = through(
        settings,
        mtls_proxy,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
    )
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(bad)
    assert str(caught.value) == (
        f"TLS handshake with temporal at {mtls_proxy.address} failed: the server requires "
        "a client certificate: set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
    )
    assert mtls_proxy.requests == []
    assert mtls_proxy.handshake_failed.wait(timeout=30)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in mtls_proxy.handshake_errors[0]


# What the SDK reported, seen in 80 refused connections through the proxy (the variant
# depends on timing) and the alerts a Go server may send instead of hanging up.
REFUSED_AFTER_HANDSHAKE = [
    "Failed client connect: `get_system_info` call error after connection: Status { code: "
    'Unknown, message: "transport error", source: Some(tonic::transport::Error(Transport, '
    'hyper::Error(Io, Custom { kind: UnexpectedEof, error: "peer closed connection without '
    'sending TLS close_notify" }))) }',
    "Failed client connect: `get_system_info` call error after connection: Status { code: "
    'Unknown, message: "transport error", source: Some(tonic::transport::Error(Transport, '
    'hyper::Error(Io, Custom { kind: BrokenPipe, error: "stream closed because of a broken '
    'pipe" }))) }',
    "Failed client connect: `get_system_info` call error after connection: Status { code: "
    'Cancelled, message: "operation was canceled", source: Some(tonic::transport::Error('
    'Transport, hyper::Error(Canceled, "connection closed"))) }',
    "Failed client connect: Server connection error: tonic::transport::Error(Transport, "
    "ConnectError(Custom { kind: InvalidData, error: AlertReceived(CertificateRequired) }))",
]


@pytest.mark.parametrize("raw", REFUSED_AFTER_HANDSHAKE)
def test_every_way_a_refused_client_certificate_shows_gets_the_same_sentence(raw: str) -> None:
    tls = {"temporal_address": "t:7233", "temporal_tls": True}
    assert explain(Settings(**tls), raw).endswith(
        "the server requires a client certificate: set TEMPORAL_TLS_CLIENT_CERT_PATH and "
        "TEMPORAL_TLS_CLIENT_KEY_PATH"
    )
    with_cert = Settings(
        **tls,
        temporal_tls_client_cert_path=Path("/c.pem"),
        temporal_tls_client_key_path=Path("/k.pem"),
    )
    assert "the server refused the client certificate TEMPORAL_TLS_CLIENT_CERT_PATH (/c.pem)" in (
        explain(with_cert, raw)
    )


@pytest.mark.parametrize("raw", REFUSED_AFTER_HANDSHAKE[:3])
def test_a_closed_connection_with_an_api_key_is_not_blamed_on_a_certificate(raw: str) -> None:
    """API-key users (Temporal Cloud) don't use client certificates: a connection closed
    after the handshake may be the network; the line says both."""
    keyed = Settings(temporal_address="t:7233", temporal_api_key="k" * 20)
    line = explain(keyed, raw)
    assert "the server closed the connection (a network failure, or a server that " in line
    assert "requires a client certificate" in line


async def test_mtls_with_a_client_certificate_of_an_untrusted_ca_is_refused(
    settings: Settings, mtls_proxy: TlsProxy, pki: Pki
) -> None:
    bad = through(
        settings,
        mtls_proxy,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
        temporal_tls_client_cert_data=pki.chain(pki.stranger).decode(),
        temporal_tls_client_key_data=pki.stranger.private_key_pem.bytes().decode(),
    )
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(bad)
    assert "the server refused the client certificate TEMPORAL_TLS_CLIENT_CERT_DATA" in str(
        caught.value
    )
    assert mtls_proxy.requests == []


async def test_a_client_key_of_another_certificate_is_named(
    settings: Settings, mtls_proxy: TlsProxy, pki: Pki
) -> None:
    bad = through(
        settings,
        mtls_proxy,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
        temporal_tls_client_cert_data=pki.chain(pki.client).decode(),
        temporal_tls_client_key_data=pki.stranger.private_key_pem.bytes().decode(),
    )
    with pytest.raises(TemporalConnectionError) as caught:
        await connect(bad)
    assert "the client key TEMPORAL_TLS_CLIENT_KEY_DATA does not belong to the client " in str(
        caught.value
    )


# API key


async def test_the_api_key_reaches_the_server_inside_tls(
    settings: Settings, proxy: TlsProxy, pki: Pki
) -> None:
    """The proxy decodes the HTTP/2 headers it forwards: every call carries the key."""
    key = f"tc-{uuid.uuid4().hex}"
    own = through(
        settings,
        proxy,
        temporal_api_key=key,
        temporal_tls_server_ca_cert_path=pki.ca_path,
        temporal_tls_server_name=SERVER_NAME,
    )
    client = await connect(own)
    await client.count_workflows()
    assert len(proxy.requests) >= 2  # GetSystemInfo at connect, then the count
    assert proxy.headers_named("authorization") == [f"Bearer {key}"] * len(proxy.requests)


# settings: validation names the setting, TLS implied by its material


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/c.pem"},
            "TEMPORAL_TLS_CLIENT_CERT_PATH (or _DATA) is set without TEMPORAL_TLS_CLIENT_KEY_PATH",
        ),
        (
            {"TEMPORAL_TLS_CLIENT_KEY_DATA": "-----BEGIN PRIVATE KEY-----"},
            "TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA) is set without TEMPORAL_TLS_CLIENT_CERT_PATH",
        ),
        (
            {
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/ca.pem",
                "TEMPORAL_TLS_SERVER_CA_CERT_DATA": "-----BEGIN CERTIFICATE-----",
            },
            "set TEMPORAL_TLS_SERVER_CA_CERT_PATH or TEMPORAL_TLS_SERVER_CA_CERT_DATA, not both",
        ),
        (
            {"TEMPORAL_TLS": "false", "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/ca.pem"},
            "TEMPORAL_TLS is false but TEMPORAL_TLS_SERVER_CA_CERT_PATH is set",
        ),
    ],
)
def test_contradictory_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings()


def test_what_switches_tls_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = {"temporal_address": "t:7233"}
    assert connect_args(Settings(**base))["tls"] is False
    assert connect_args(Settings(**base, temporal_api_key=SecretStr("k")))["tls"] is True
    off = Settings(**base, temporal_tls=False, temporal_api_key=SecretStr("k"))
    assert connect_args(off)["tls"] is False and connect_args(off)["api_key"] == "k"
    named = connect_args(Settings(**base, temporal_tls_server_name="t.example"))["tls"]
    assert not isinstance(named, bool) and named.domain == "t.example"
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "")  # FOO= in a compose file
    assert connect_args(Settings(**base))["tls"] is False


def test_unreadable_or_non_pem_material_names_the_setting(tmp_path: Path) -> None:
    missing = Settings(
        temporal_address="t:7233", temporal_tls_server_ca_cert_path=tmp_path / "nope.pem"
    )
    with pytest.raises(TemporalConnectionError, match="TEMPORAL_TLS_SERVER_CA_CERT_PATH: cannot"):
        connect_args(missing)
    (tmp_path / "der.crt").write_bytes(b"\x30\x82\x01\x0a")
    der = Settings(
        temporal_address="t:7233",
        temporal_tls_client_cert_path=tmp_path / "der.crt",
        temporal_tls_client_key_data=SecretStr("-----BEGIN x"),
    )
    with pytest.raises(TemporalConnectionError, match="TEMPORAL_TLS_CLIENT_CERT_PATH .* no PEM"):
        connect_args(der)


# the commands: one line and exit 1


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "QDRANT_"))}
    assert settings.database_url
    return {**keep, "DATABASE_URL": settings.database_url, **extra}


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_command_with_a_wrong_ca_prints_one_line_and_exits_1(
    settings: Settings, proxy: TlsProxy, pki: Pki, tmp_path: Path, command: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", command],
        env=cli_env(
            settings,
            TEMPORAL_ADDRESS=proxy.address,
            TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(pki.wrong_ca_path),
            TEMPORAL_TLS_SERVER_NAME=SERVER_NAME,
            QDRANT_URL="http://127.0.0.1:1",  # `worker` wants a shared engine; never reached
            DATA_DIR=str(tmp_path),
            LOG_LEVEL="WARNING",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"session-service {command}: TLS handshake with temporal at {proxy.address} failed: "
        "the server's certificate is not signed by "
        f"TEMPORAL_TLS_SERVER_CA_CERT_PATH ({pki.wrong_ca_path})"
    ]


def test_a_command_with_contradictory_settings_prints_the_setting_and_exits_2(
    settings: Settings,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", "serve"],
        env=cli_env(
            settings, TEMPORAL_ADDRESS="127.0.0.1:1", TEMPORAL_TLS_CLIENT_CERT_PATH="/c.pem"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "session-service serve: TEMPORAL_TLS_CLIENT_CERT_PATH (or _DATA) is set without "
        "TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA): a client certificate needs its key"
    ]
