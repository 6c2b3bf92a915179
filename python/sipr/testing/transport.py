"""The sockets of one test user agent: a UDP socket, or a TCP/TLS listener
plus the connections it opened or accepted. Every message that arrives is
handed to one callback with the peer it came from; a response goes back the
way its request came (the same connection)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from sipr.testing.message import Message, parse, split_stream

Peer = tuple[str, str, int]
OnMessage = Callable[[Message], None]

#: Bound on what a peer may leave unparsed in a stream buffer.
MAX_BUFFER = 1 << 20


class Endpoint:
    """Sends and receives SIP for one user agent on 127.0.0.1."""

    def __init__(
        self,
        transport: str,
        on_message: OnMessage,
        *,
        host: str = "127.0.0.1",
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be udp, tcp or tls, not {transport!r}")
        if transport == "tls" and (server_ssl is None or client_ssl is None):
            raise ValueError("a TLS user agent needs server and client SSL contexts")
        self.transport = transport
        self.host = host
        # Bound now, so a test knows the address before anything is awaited;
        # what arrives before `start()` waits in the kernel's queues.
        self._sock = socket.socket(
            socket.AF_INET, socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        )
        self._sock.bind((host, 0))
        if transport != "udp":
            self._sock.listen(64)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self.on_message = on_message
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._streams: dict[Peer, asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()
        #: Messages that did not parse (a test may assert there are none).
        self.garbage: list[bytes] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), sock=self._sock
            )
            self._udp = transport
            return
        self._server = await asyncio.start_server(
            self._accepted,
            sock=self._sock,
            ssl=self.server_ssl if self.transport == "tls" else None,
        )

    async def send(self, data: bytes, to: tuple[str, int] | Peer) -> None:
        """Sends `data` to (host, port), or back on the connection `to` names."""
        host, port = (to[1], to[2]) if len(to) == 3 else (to[0], to[1])
        if self._udp is not None:
            self._udp.sendto(data, (host, port))
            return
        key: Peer = (self.transport, host, port)
        writer = self._streams.get(key)
        if writer is None or writer.is_closing():
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=self.client_ssl if self.transport == "tls" else None,
                server_hostname=host if self.transport == "tls" else None,
                local_addr=(self.host, 0),
            )
            self._follow(reader, writer, key)
        writer.write(data)
        await writer.drain()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        self._follow(reader, writer, (self.transport, host, port))

    def _follow(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Peer
    ) -> None:
        self._streams[key] = writer
        task = asyncio.get_running_loop().create_task(self._read(reader, writer, key))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Peer
    ) -> None:
        buffer = bytearray()
        try:
            while len(buffer) < MAX_BUFFER:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                for data in split_stream(buffer):
                    self._deliver(data, key)
        except (ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            if self._streams.get(key) is writer:
                del self._streams[key]
            writer.close()

    def _deliver(self, data: bytes, peer: Peer) -> None:
        try:
            msg = parse(data, peer)
        except ValueError:
            self.garbage.append(data)
            return
        self.on_message(msg)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        elif self._server is None:
            self._sock.close()  # never started
        if self._server is not None:
            self._server.close()
        for writer in list(self._streams.values()):
            writer.close()
        for task in list(self._readers):
            task.cancel()
        for task in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip() == b"":
            return  # a keep-alive
        self.endpoint._deliver(data, ("udp", addr[0], addr[1]))
