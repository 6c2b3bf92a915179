"""A deliberately small HTTP/1.1 listener for the control plane:
`POST /rpc` (JSON-RPC 2.0), `GET /metrics` (Prometheus text format) and
`GET /` (the status page). One request per connection, bounded head and body
sizes, bounded concurrent connections; with a token, every request needs
`Authorization: Bearer <token>`."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from importlib import resources
from typing import Any

from sipr import _lifecycle, http_routes
from sipr.control import ControlError
from sipr.control.listener import Listener
from sipr.control.metrics import render as render_metrics
from sipr.control.rpc import encode
from sipr.control.stats import collect

log = logging.getLogger("sipr.control")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_CONNECTIONS = 32
#: A client must send its whole request within this time.
REQUEST_SECONDS = 10.0

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
        super().__init__(message or REASONS[status])
        self.status = status


class HttpListener(Listener):
    max_connections = MAX_CONNECTIONS

    def __init__(self, ctl: Any, host: str, port: int, token: str | None) -> None:
        super().__init__()
        self.ctl = ctl
        self.host, self.port = host, port
        self.token = token
        self.status_page = (
            resources.files("sipr.control").joinpath("static/status.html").read_bytes()
        )

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
            )
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise ControlError(f"--http {self.host}:{self.port}: {reason}") from e
        host, port = self.server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        _lifecycle.announce(f"sipr: control http on {shown}:{port}")

    async def refuse(self, writer: asyncio.StreamWriter) -> None:
        await _respond(writer, 503, b"too many connections\n", "text/plain")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = ""
        try:
            method, path, headers, body = await asyncio.wait_for(
                _read_request(reader), REQUEST_SECONDS
            )
            routes = self.ctl.server.app.http_routes
            if routes:  # the app's own routes (@app.http) come first
                mine = await http_routes.answer(routes, self.token, method, path, headers, body)
                if mine is not None:
                    status, payload, ctype = mine
                    await _respond(writer, status, payload if method != "HEAD" else b"", ctype)
                    return
            if path.split("?", 1)[0] not in STATUS_PAGE_PATHS:
                # The page itself is static and holds no data; what it
                # fetches (/rpc) needs the token, which the page takes
                # from its URL fragment (#token=…).
                self._authorize(headers)
            status, payload, ctype = await self._route(method, path, body)
        except HttpError as e:
            status, payload, ctype = e.status, f"{e}\n".encode(), "text/plain"
        except TimeoutError:
            status, payload, ctype = 408, b"request timeout\n", "text/plain"
        await _respond(writer, status, payload if method != "HEAD" else b"", ctype)

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            raise HttpError(401, "missing or wrong bearer token")

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        if path == "/rpc":
            if method != "POST":
                raise HttpError(405, "use POST for /rpc")
            response = await self.ctl.registry.handle(body)
            return 200, encode(response) if response is not None else b"", "application/json"
        if method not in ("GET", "HEAD"):
            raise HttpError(405)
        if path == "/metrics":
            stats = await collect(self.ctl.server, self.ctl.started)
            return 200, render_metrics(stats).encode(), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/stats.json":
            stats = await collect(self.ctl.server, self.ctl.started)
            return 200, json.dumps(stats).encode(), "application/json"
        if path in STATUS_PAGE_PATHS:
            return 200, self.status_page, "text/html; charset=utf-8"
        raise HttpError(404)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431) from None
    except asyncio.IncompleteReadError as e:
        raise HttpError(400, "incomplete request") from e
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, path, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if method in ("POST", "PUT", "PATCH"):
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise HttpError(411)
        if int(length) > MAX_BODY_BYTES:
            raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = await reader.readexactly(int(length))
        except asyncio.IncompleteReadError as e:
            raise HttpError(400, "incomplete body") from e
    return method, path, headers, body


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
    )
    if status == 401:
        head += 'WWW-Authenticate: Bearer realm="sipr"\r\n'
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
