"""`serve(app)`: an app on the real Rust core, in this process and on this
event loop, listening on 127.0.0.1 ephemeral ports; `SUT.ua()` makes test
user agents that talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipr.app import App
from sipr.server import Server
from sipr.settings import ControlSettings, TlsSettings
from sipr.testing.tls import TestCA
from sipr.testing.ua import UA

TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class HttpAnswer:
    """An answer of the control HTTP listener."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @staticmethod
    def parse(raw: bytes) -> HttpAnswer:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return HttpAnswer(int(lines[0].split(" ")[1]), headers, body)


class SUT:
    """The system under test: a served app and its listening addresses."""

    def __init__(self, app: App, server: Any, ca: TestCA | None, timeout: float) -> None:
        self.app = app
        self.server = server
        #: The throwaway CA behind the TLS listener (None without TLS).
        self.ca = ca
        self.timeout = timeout
        #: The host part of the AoRs the test UAs use.
        self.domain = "127.0.0.1"
        self.addresses: dict[str, tuple[str, int]] = {}
        for transport, host, port in server.core.local_addrs():
            self.addresses.setdefault(transport, (host, port))
        self.uas: list[UA] = []
        #: (host, port) of the control HTTP listener (`serve(http_token=...)`).
        self.http_address: tuple[str, int] | None = None
        control = getattr(server, "control", None)
        for listener in getattr(control, "listeners", []):
            sockets = getattr(getattr(listener, "server", None), "sockets", None)
            if sockets and type(listener).__name__.startswith("Http"):
                self.http_address = sockets[0].getsockname()[:2]

    def address(self, transport: str = "udp") -> tuple[str, int]:
        """(host, port) of the listener for `transport`."""
        try:
            return self.addresses[transport]
        except KeyError:
            raise ValueError(
                f"the system under test does not listen on {transport}: "
                f"serve(app, transports=[..., {transport!r}])"
            ) from None

    def uri(self, user: str | None = None, transport: str = "udp") -> str:
        """`sip:user@host:port` of the listener for `transport`."""
        host, port = self.address(transport)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user + '@' if user else ''}{host}:{port}{suffix}"

    def ua(
        self,
        name: str,
        *,
        transport: str = "udp",
        password: str | None = None,
        domain: str | None = None,
        answer: int | None = 200,
        reply: int | None = 200,
    ) -> UA:
        """A user agent `name@domain` on its own socket, using the system
        under test as its outbound proxy. It answers INVITEs with 180 then
        `answer` and other requests with `reply` unless they are None
        (then `await ua.next_request(...)` and answer in the test)."""
        self.address(transport)
        server_ssl = client_ssl = None
        if transport == "tls":
            assert self.ca is not None
            server_ssl = self.ca.server_context("127.0.0.1")
            client_ssl = self.ca.client_context()
        ua = UA(
            self,
            name,
            transport=transport,
            password=password,
            domain=domain,
            answer=answer,
            reply=reply,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            timeout=self.timeout,
        )
        self.uas.append(ua)
        return ua

    async def http(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        json_body: object = None,
    ) -> HttpAnswer:
        """One request to the control HTTP listener (HTTP/1.1, one per connection)."""
        if self.http_address is None:
            raise ValueError("no control HTTP listener: serve(app, http_token=...)")
        if json_body is not None:
            body = json.dumps(json_body).encode()
        host, port = self.http_address
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        if token is not None:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(head.encode() + b"\r\n" + (body or b""))
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
        return HttpAnswer.parse(raw)

    def stats(self) -> dict[str, int]:
        """The served app's counters (`app.stats()`)."""
        return self.app.stats()


def _server_for(
    app: App, listen: list[str], tls: tuple[Path, Path, Path] | None, http_token: str | None
) -> Server:
    """The real `sipr.server.Server` with its TLS files and, with a token,
    the control HTTP listener on an ephemeral port."""
    control = None
    if http_token is not None:
        control = ControlSettings(
            ctl_socket=None, http=("127.0.0.1", 0), http_token=http_token or None
        )
    settings = None
    if tls is not None:
        cert, key, ca = tls
        settings = TlsSettings(cert=cert, key=key, ca=ca)
    return Server(app, listen, control, drain_timeout=0.0, tls=settings)


@contextlib.asynccontextmanager
async def serve(
    app: App,
    *,
    transports: Sequence[str] = ("udp", "tcp"),
    ca: TestCA | None = None,
    timeout: float = 5.0,
    http_token: str | None = None,
) -> AsyncIterator[SUT]:
    """Serves `app` with the real server loop and Rust core on 127.0.0.1
    (one ephemeral port per transport) until the block ends; yields the
    `SUT`. With "tls" among `transports`, its certificate comes from `ca`
    (a new `TestCA` if None), which the test UAs trust. `timeout` bounds
    every wait of the test UAs (an AssertionError when it passes). With
    `http_token` (a string; "" for none), the control HTTP listener runs
    too, on an ephemeral port: `await sut.http("GET", "/calls", token=...)`."""
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or not transports:
        raise ValueError(f"transports must be among {TRANSPORTS}, got {list(transports)}")
    listen = [f"{t}:127.0.0.1:0" for t in transports]
    own_ca = None
    tls_files = None
    if "tls" in transports:
        if ca is None:
            ca = own_ca = TestCA()
        cert, key = ca.issue("127.0.0.1", "localhost")
        tls_files = (cert, key, ca.cert)
    loop = asyncio.get_running_loop()
    task_factory = loop.get_task_factory()
    server = _server_for(app, listen, tls_files, http_token)
    serving = loop.create_task(server.serve())
    ready = loop.create_task(server.ready.wait())
    try:
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # raises what stopped it from starting
            raise RuntimeError("the server stopped before it was ready")
        sut = SUT(app, server, ca, timeout)
        try:
            yield sut
        finally:
            for ua in sut.uas:
                await ua.close()
    finally:
        ready.cancel()
        # Stop without the shutdown drain: a test ends its own calls.
        server.aborted.set()
        server.stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        loop.set_task_factory(task_factory)  # Server.serve sets an eager one (3.12+)
        if own_ca is not None:
            own_ca.cleanup()
