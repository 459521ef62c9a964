"""The one way the service reaches Temporal: address, namespace, TLS, mTLS and API key.

The API, the worker and ``serve``/``dev`` all connect through :func:`connect`, so
a secured cluster (a TLS frontend, mTLS, Temporal Cloud's API keys) needs the
same settings everywhere. The SDK reports a failed connection as one long
``RuntimeError`` from its Rust core; :func:`explain` turns the common cases into
a sentence naming the setting to change, raised as :class:`TemporalConnectionError`
(``session-service`` prints it as one line and exits 1).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from session_service.domain.errors import StartupError
from session_service.settings import Settings


class TemporalConnectionError(StartupError):
    """Temporal can't be reached as configured; the message says what to change."""


class ConnectArgs(TypedDict):
    """What :func:`connect_args` gives ``Client.connect``, beside what each caller adds."""

    target_host: str
    namespace: str
    tls: bool | TLSConfig
    api_key: str | None


def connect_args(settings: Settings) -> ConnectArgs:
    """``Client.connect`` keyword arguments for the configured cluster.

    TLS is passed explicitly (never ``None``): the SDK would otherwise switch TLS on
    by itself whenever an API key is given, which ``TEMPORAL_TLS=false`` must be able
    to prevent.
    """
    if not settings.temporal_address:
        raise TemporalConnectionError("TEMPORAL_ADDRESS is not set")
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return ConnectArgs(
        target_host=settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=api_key,
    )


def tls_config(settings: Settings) -> bool | TLSConfig:
    """``False``, ``True`` (the system's CAs) or a ``TLSConfig`` with the PEM material."""
    if not settings.temporal_tls_enabled:
        return False
    key_data = settings.temporal_tls_client_key_data
    ca = _pem(
        "SERVER_CA_CERT",
        settings.temporal_tls_server_ca_cert_path,
        settings.temporal_tls_server_ca_cert_data,
    )
    cert = _pem(
        "CLIENT_CERT",
        settings.temporal_tls_client_cert_path,
        settings.temporal_tls_client_cert_data,
    )
    key = _pem(
        "CLIENT_KEY",
        settings.temporal_tls_client_key_path,
        key_data.get_secret_value() if key_data else None,
    )
    if ca is None and cert is None and settings.temporal_tls_server_name is None:
        return True
    return TLSConfig(
        server_root_ca_cert=ca,
        domain=settings.temporal_tls_server_name,
        client_cert=cert,
        client_private_key=key,
    )


def _pem(name: str, path: Path | None, data: str | None) -> bytes | None:
    """The PEM bytes of ``TEMPORAL_TLS_<name>_PATH`` or ``_DATA``; errors name the setting."""
    if path is not None:
        setting = f"TEMPORAL_TLS_{name}_PATH"
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise TemporalConnectionError(
                f"{setting}: cannot read {path} ({exc.strerror or exc})"
            ) from exc
        where = f"{setting} ({path})"
    elif data is not None:
        content, where = data.encode(), f"TEMPORAL_TLS_{name}_DATA"
    else:
        return None
    if b"-----BEGIN " not in content:
        raise TemporalConnectionError(f"{where} holds no PEM block (-----BEGIN ...)")
    return content


async def connect(settings: Settings, **extra: Any) -> Client:
    """``Client.connect`` with the configured security; ``extra`` adds the caller's
    own arguments (data converter, runtime)."""
    args = connect_args(settings)
    try:
        client = await Client.connect(**args, **extra)
    except RuntimeError as exc:
        raise TemporalConnectionError(explain(settings, str(exc))) from exc
    await _check_namespace(client, settings)
    return client


async def _check_namespace(client: Client, settings: Settings) -> None:
    """One call scoped to the namespace: the server lets the connection's own call through
    without credentials, so a wrong namespace or API key shows only here (as one line, not
    as a traceback from the first workflow call)."""
    host = settings.temporal_address or "(TEMPORAL_ADDRESS unset)"
    namespace = settings.temporal_namespace
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=30)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            message = f"namespace '{namespace}' does not exist: check TEMPORAL_NAMESPACE"
        elif exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            hint = "check TEMPORAL_API_KEY" if settings.temporal_api_key else "set TEMPORAL_API_KEY"
            message = (
                f"the credentials were refused for namespace '{namespace}' ({exc.message}): "
                f"{hint}, or TEMPORAL_TLS_CLIENT_CERT_PATH"
            )
        else:
            message = f"namespace '{namespace}' can't be read: {' '.join(exc.message.split())}"
        raise TemporalConnectionError(f"temporal at {host}: {message}") from exc


def _setting_set(settings: Settings, name: str) -> str:
    """Which of ``TEMPORAL_TLS_<name>_PATH`` / ``_DATA`` is set, with the path if any."""
    path = getattr(settings, f"temporal_tls_{name.lower()}_path")
    if path is not None:
        return f"TEMPORAL_TLS_{name}_PATH ({path})"
    return f"TEMPORAL_TLS_{name}_DATA"


_CLOSED = ("UnexpectedEof", "BrokenPipe", "ConnectionReset", "ConnectionAborted", "Canceled")
_CLIENT_CERT_ALERTS = (
    "AlertReceived(CertificateRequired)",
    "AlertReceived(BadCertificate)",
    "AlertReceived(UnknownCA)",
    "AlertReceived(HandshakeFailure)",
)


def explain(settings: Settings, raw: str) -> str:
    """One line for an operator from the SDK's connection error.

    The Rust core's text is matched on the names of rustls / tonic errors; whatever
    is not recognised keeps the raw text, on one line.
    """
    host = settings.temporal_address or "(TEMPORAL_ADDRESS unset)"
    tls = settings.temporal_tls_enabled
    has_ca = (
        settings.temporal_tls_server_ca_cert_path is not None
        or settings.temporal_tls_server_ca_cert_data is not None
    )
    has_cert = (
        settings.temporal_tls_client_cert_path is not None
        or settings.temporal_tls_client_cert_data is not None
    )
    handshake = f"TLS handshake with temporal at {host} failed: "
    if "UnknownIssuer" in raw or "BadSignature" in raw:
        if has_ca:
            return handshake + (
                "the server's certificate is not signed by "
                + _setting_set(settings, "SERVER_CA_CERT")
            )
        return handshake + (
            "the server's certificate is not signed by a CA this machine trusts: "
            "set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
        )
    if "NotValidForName" in raw:
        listed = re.search(r"presented: \[(.*?)\]", raw)
        presented = re.findall(r'DnsName\(\\?"([^"\\]+)', listed.group(1) if listed else "")
        name = settings.temporal_tls_server_name or host.rsplit(":", 1)[0]
        names = f" (it names {', '.join(presented)})" if presented else ""
        return handshake + (
            f"the server's certificate is not valid for {name}{names}: "
            "set TEMPORAL_TLS_SERVER_NAME to a name it carries"
        )
    if "Expired" in raw and "InvalidCertificate" in raw:
        return handshake + "the server's certificate has expired"
    if "InconsistentKeys" in raw or "KeyMismatch" in raw:
        return handshake + (
            f"the client key {_setting_set(settings, 'CLIENT_KEY')} does not belong to "
            f"the client certificate {_setting_set(settings, 'CLIENT_CERT')}"
        )
    if tls and ("InvalidContentType" in raw or "CorruptMessage" in raw):
        return handshake + (
            "the server does not speak TLS on this port: set TEMPORAL_TLS=false, "
            "or check TEMPORAL_ADDRESS"
        )
    if "ConnectionRefused" in raw:
        return f"cannot connect to temporal at {host}: connection refused (check TEMPORAL_ADDRESS)"
    if "dns error" in raw or "failed to lookup address" in raw:
        return f"cannot connect to temporal at {host}: the host name does not resolve"
    if "Unauthenticated" in raw or "PermissionDenied" in raw:
        hint = "check TEMPORAL_API_KEY" if settings.temporal_api_key else "set TEMPORAL_API_KEY"
        return f"temporal at {host} refused the credentials: {hint}"
    refused_cert = any(s in raw for s in _CLIENT_CERT_ALERTS)
    closed = "after connection" in raw and any(s in raw for s in _CLOSED)
    if refused_cert or closed:
        # Under TLS 1.3 the client's handshake is over before the server checks the client
        # certificate: a server that refuses it (or misses it) sends an alert or just hangs
        # up, and the first call fails in one of these ways, depending on timing.
        if tls and not has_cert and settings.temporal_api_key and not refused_cert:
            return handshake + (
                "the server closed the connection (a network failure, or a server that "
                "requires a client certificate: TEMPORAL_TLS_CLIENT_CERT_PATH and "
                "TEMPORAL_TLS_CLIENT_KEY_PATH)"
            )
        if tls and not has_cert:
            return handshake + (
                "the server requires a client certificate: set "
                "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
            )
        if tls:
            return handshake + (
                f"the server refused the client certificate {_setting_set(settings, 'CLIENT_CERT')}"
                " (is it signed by a CA the server trusts?)"
            )
        return (
            f"temporal at {host} closed the connection: if it requires TLS, set "
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH (or TEMPORAL_TLS=true for a publicly trusted "
            "certificate)"
        )
    return f"cannot connect to temporal at {host}: " + " ".join(raw.split())
