"""`serve(app)`: an app on the real Rust core, in this process and on this
event loop, listening on 127.0.0.1 ephemeral ports; `SUT.ua()` makes test
user agents that talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sipr.app import App
from sipr.testing.tls import TestCA
from sipr.testing.ua import UA

TRANSPORTS = ("udp", "tcp", "tls")


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

    def stats(self) -> dict[str, int]:
        """The served app's counters (`app.stats()`)."""
        return self.app.stats()


def _server_for(app: App, listen: list[str], tls: tuple[str, str, str] | None) -> Any:
    """The real `sipr.server.Server`, given its TLS files however this
    version of it takes them."""
    from sipr import server as server_module

    params = inspect.signature(server_module.Server).parameters
    if tls is None:
        return server_module.Server(app, listen, drain_timeout=0.0)
    cert, key, ca = tls
    if "core_options" in params:
        options = {"tls_cert": cert, "tls_key": key, "tls_ca": ca}
        return server_module.Server(app, listen, drain_timeout=0.0, core_options=options)
    from sipr.settings import TlsSettings  # type: ignore[import-not-found, unused-ignore]

    settings = TlsSettings(cert=cert, key=key, ca=ca)  # type: ignore[call-arg, unused-ignore]
    return server_module.Server(app, listen, drain_timeout=0.0, tls=settings)


@contextlib.asynccontextmanager
async def serve(
    app: App,
    *,
    transports: Sequence[str] = ("udp", "tcp"),
    ca: TestCA | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[SUT]:
    """Serves `app` with the real server loop and Rust core on 127.0.0.1
    (one ephemeral port per transport) until the block ends; yields the
    `SUT`. With "tls" among `transports`, its certificate comes from `ca`
    (a new `TestCA` if None), which the test UAs trust. `timeout` bounds
    every wait of the test UAs (an AssertionError when it passes)."""
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
        tls_files = (str(cert), str(key), str(ca.cert))
    loop = asyncio.get_running_loop()
    task_factory = loop.get_task_factory()
    server = _server_for(app, listen, tls_files)
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
