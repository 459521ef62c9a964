"""A TLS-terminating TCP proxy in front of the (plaintext) Temporal dev server.

The dev server speaks no TLS, so the tests put this in front of it: TLS (ALPN ``h2``
for gRPC) with a certificate from a throwaway CA, optionally requiring a client
certificate, and plain TCP to the dev server behind it. Because it terminates TLS
it sees the client's HTTP/2 frames in clear: it decodes their header blocks
(HPACK) and keeps the request headers, so a test can check what metadata, such
as ``authorization``, really crossed the TLS connection.

It runs on an event loop of its own thread, so blocking tests (a subprocess
waiting for the CLI) and async tests alike can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, CONTINUATION = 0x1, 0x9
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20


@dataclass
class HeaderSniffer:
    """Follows the client-to-server HTTP/2 stream of one connection and decodes the
    header blocks of its requests; gives up quietly on anything it doesn't expect."""

    requests: list[dict[str, str]]
    buffer: bytearray = field(default_factory=bytearray)
    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)
    preface_seen: bool = False
    block: bytearray | None = None
    broken: bool = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        self.buffer += data
        try:
            self._frames()
        except Exception:
            self.broken = True

    def _frames(self) -> None:
        if not self.preface_seen:
            if len(self.buffer) < len(PREFACE):
                return
            if bytes(self.buffer[: len(PREFACE)]) != PREFACE:
                raise ValueError("not HTTP/2")
            del self.buffer[: len(PREFACE)]
            self.preface_seen = True
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            kind, flags = self.buffer[3], self.buffer[4]
            if len(self.buffer) < 9 + length:
                return
            payload = bytes(self.buffer[9 : 9 + length])
            del self.buffer[: 9 + length]
            if kind == HEADERS:
                self.block = bytearray(_header_fragment(payload, flags))
            elif kind == CONTINUATION and self.block is not None:
                self.block += payload
            else:
                continue
            if flags & END_HEADERS:
                decoded = self.decoder.decode(bytes(self.block), raw=False)
                self.requests.append({str(k): str(v) for k, v in decoded})
                self.block = None


def _header_fragment(payload: bytes, flags: int) -> bytes:
    """The HPACK bytes of a HEADERS frame, without its padding and priority fields."""
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, len(payload) - payload[0]
    if flags & PRIORITY:
        start += 5
    return payload[start:end]


class TlsProxy:
    """``with TlsProxy(upstream, context) as proxy:`` listens on ``proxy.address``."""

    def __init__(self, upstream: str, context: ssl.SSLContext) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.context = context
        self.requests: list[dict[str, str]] = []
        self.handshake_errors: list[str] = []
        # Set once a handshake failed: the client may see the connection close before
        # the proxy's thread has recorded why.
        self.handshake_failed = threading.Event()
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @staticmethod
    def server_context(
        cert_chain_pem: bytes, key_pem: bytes, *, client_ca_pem: bytes | None = None
    ) -> ssl.SSLContext:
        """A server-side context for gRPC (ALPN h2); with ``client_ca_pem`` a client
        certificate signed by that CA is required."""
        import tempfile
        from pathlib import Path

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["h2"])
        with tempfile.TemporaryDirectory() as tmp:
            chain, key = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
            chain.write_bytes(cert_chain_pem)
            key.write_bytes(key_pem)
            context.load_cert_chain(chain, key)
        if client_ca_pem is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca_pem.decode())
        return context

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        started: Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def headers_named(self, name: str) -> list[str]:
        """Every value of request header ``name`` seen so far."""
        return [r[name] for r in list(self.requests) if name in r]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """TLS is started by hand, so a failed handshake is recorded, not just logged."""
        try:
            await self._serve(client_r, client_w)
        except asyncio.CancelledError:
            client_w.close()  # the proxy is stopping; asyncio's callback can't take a cancel

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            await client_w.start_tls(self.context)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.handshake_errors.append(str(exc))
            self.handshake_failed.set()
            client_w.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        sniffer = HeaderSniffer(self.requests)
        await asyncio.gather(
            _pipe(client_r, up_w, sniffer), _pipe(up_r, client_w, None), return_exceptions=True
        )


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sniffer: HeaderSniffer | None
) -> None:
    try:
        while data := await reader.read(65536):
            if sniffer is not None:
                sniffer.feed(data)
            writer.write(data)
            await writer.drain()
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
