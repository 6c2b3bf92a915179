"""The control plane's HTTP/1.1 listener: `POST /rpc` (JSON-RPC 2.0), `GET
/metrics` (Prometheus text format), `GET /stats.json` and `GET /` (the status
page). HTTP framing is h11's (docs/decisions/0026-control-http-and-metrics.md);
what stays here is the policy: one request per connection, bounded head and
body sizes, a deadline for the whole request, bounded concurrent connections,
and with a token every request but the static page needs
`Authorization: Bearer <token>`."""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import json
import logging
import os
from importlib import resources

import h11

from sipr import http_routes
from sipr._protocols import ServerView
from sipr.control.config import ControlError
from sipr.control.listener import Listener
from sipr.control.metrics import CONTENT_TYPE
from sipr.control.metrics import render as render_metrics
from sipr.control.rpc import Registry, encode
from sipr.control.stats import collect
from sipr.logs import announce

log = logging.getLogger("sipr.control")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_CONNECTIONS = 32
#: A client must send its whole request within this time.
REQUEST_SECONDS = 10.0
READ_CHUNK = 16 * 1024

STATUS_PAGE_PATHS = ("/", "/status", "/status.html")

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or REASONS.get(status, "error"))
        self.status = status


class Request:
    """What the listener acts on: method, path (no query), headers, body;
    `target` is the path with its query (the app's routes read both)."""

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, target: str = ""
    ) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.target = target or path


class HttpListener(Listener):
    max_connections = MAX_CONNECTIONS

    def __init__(
        self,
        registry: Registry,
        server: ServerView,
        started: float,
        host: str,
        port: int,
        token: str | None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.served = server
        self.started = started
        self.host, self.port = host, port
        self.token = token
        self.status_page = (
            resources.files("sipr.control").joinpath("static/status.html").read_bytes()
        )

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise ControlError(f"--http {self.host}:{self.port}: {reason}") from e
        host, port = self.server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        announce(f"sipr: control http on {shown}:{port}")

    async def refuse(self, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        await _respond(conn, writer, 503, b"too many connections\n", "text/plain")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        method = ""
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                request = await _read_request(conn, reader)
            method = request.method
            routes = self.app_routes()
            if routes:  # the app's own routes (@app.http) come first
                mine = await http_routes.answer(
                    routes, self.token, method, request.target, request.headers, request.body
                )
                if mine is not None:
                    status, payload, ctype = mine
                    body = payload if method != "HEAD" else b""
                    await _respond(conn, writer, status, body, ctype)
                    return
            if request.path not in STATUS_PAGE_PATHS:
                # The page itself is static and holds no data; what it
                # fetches (/rpc) needs the token, which the page takes
                # from its URL fragment (#token=…).
                self._authorize(request.headers)
            status, payload, ctype = await self._route(request)
        except HttpError as e:
            status, payload, ctype = e.status, f"{e}\n".encode(), "text/plain"
        except TimeoutError:
            status, payload, ctype = 408, b"request timeout\n", "text/plain"
        except Exception:
            # A bug of ours or of an app route: an answer, not a dropped connection.
            log.exception("control http: %s failed", method or "request")
            status, payload, ctype = 500, b"internal error\n", "text/plain"
        await _respond(conn, writer, status, payload if method != "HEAD" else b"", ctype)

    def app_routes(self) -> dict[tuple[str, str], http_routes.HttpHandler]:
        """The application's own `@app.http` routes, served before ours."""
        return self.served.app.http_routes

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            raise HttpError(401, "missing or wrong bearer token")

    async def _route(self, request: Request) -> tuple[int, bytes, str]:
        method, path = request.method, request.path
        if path == "/rpc":
            if method != "POST":
                raise HttpError(405, "use POST for /rpc")
            response = await self.registry.handle(request.body)
            return 200, encode(response) if response is not None else b"", "application/json"
        if method not in ("GET", "HEAD"):
            raise HttpError(405)
        if path == "/metrics":
            stats = await collect(self.served, self.started)
            return 200, render_metrics(stats), CONTENT_TYPE
        if path == "/stats.json":
            stats = await collect(self.served, self.started)
            return 200, json.dumps(stats).encode(), "application/json"
        if path in STATUS_PAGE_PATHS:
            return 200, self.status_page, "text/html; charset=utf-8"
        raise HttpError(404)


class _Reader:
    """Feeds h11 from the stream. Until the request head is complete it
    reads no more than the head bound allows, so an oversized head is
    h11's 431 however the bytes arrive."""

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        self.conn, self.reader = conn, reader
        self.head_read = 0
        self.in_head = True

    async def next_event(self) -> object:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if e.error_status_hint in REASONS else 400
                raise HttpError(status, f"{REASONS[status]}: {e}") from None
            if event is not h11.NEED_DATA:
                return event
            size = READ_CHUNK
            if self.in_head:
                size = min(size, MAX_HEAD_BYTES + 1 - self.head_read)
            data = await self.reader.read(size)
            self.head_read += len(data)
            self.conn.receive_data(data)


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request:
    feed = _Reader(conn, reader)
    event = await feed.next_event()
    feed.in_head = False
    if isinstance(event, h11.ConnectionClosed):
        raise HttpError(400, "incomplete request")
    if not isinstance(event, h11.Request):
        raise HttpError(400, "malformed request")
    method = event.method.decode("ascii", "replace")
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers
    }
    if method == "POST" and not {"content-length", "transfer-encoding"} & headers.keys():
        raise HttpError(411)
    if int(headers.get("content-length", "0")) > MAX_BODY_BYTES:
        raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    while True:
        part = await feed.next_event()
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > MAX_BODY_BYTES:
                raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise HttpError(400, "incomplete body")
    target = event.target.decode("latin-1")
    return Request(method, target.split("?", 1)[0], headers, bytes(body), target)


async def _respond(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str
) -> None:
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", str(len(body))),
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
    ]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="sipr"'))
    try:
        head = conn.send(
            h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, ""))
        )
        data = conn.send(h11.Data(data=body)) if body else b""
        end = conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        # The request was beyond answering (h11 refuses a response in this state).
        return
    writer.write((head or b"") + (data or b"") + (end or b""))
    await writer.drain()
