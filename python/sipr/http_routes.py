"""`@app.http(method, path)`: the app's own HTTP routes on the control HTTP
listener (`sipr run --http HOST:PORT --http-token TOKEN`), Kamailio's
`xhttp` `event_route[xhttp:request]`: a status API, a provisioning webhook.

    @app.http("GET", "/calls")
    async def calls(request: sipr.HttpRequest) -> dict[str, object]:
        return {"active": len(active_calls)}

A handler returns something `json.dumps` takes (answered 200,
`application/json`) or an `HttpResponse` for another status or body.
Every app route needs `Authorization: Bearer <token>` with the listener's
token; without a configured token, app routes answer 401 (they may change
state: they are never open). docs/decisions/0047."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("sipr.control")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    #: Query parameters, each with its values.
    query: dict[str, list[str]]
    #: Header names lower-cased.
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> object:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class HttpResponse:
    status: int = 200
    body: object = None
    #: Sent as is when `body` is bytes; JSON otherwise.
    content_type: str = "application/json"


HttpHandler = Callable[[HttpRequest], Awaitable[object]]


def check_route(method: str, path: str) -> tuple[str, str]:
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"@app.http: method must be one of {', '.join(METHODS)}, not {method!r}")
    if not path.startswith("/") or "?" in path or any(c.isspace() for c in path):
        raise ValueError(f"@app.http: path must start with / and hold no query, got {path!r}")
    if path in ("/rpc", "/metrics", "/stats.json", "/", "/status", "/status.html"):
        raise ValueError(f"@app.http: {path} is the control listener's own")
    return method, path


def authorized(token: str | None, headers: dict[str, str]) -> bool:
    if not token:
        return False
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


async def answer(
    routes: dict[tuple[str, str], HttpHandler],
    token: str | None,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, bytes, str] | None:
    """The answer of the app route for `method target`, or None when the app
    has none (the listener's own routes and 404 follow)."""
    parts = urlsplit(target)
    handler = routes.get(("GET" if method == "HEAD" else method, parts.path))
    if handler is None:
        if any(path == parts.path for _, path in routes):
            return 405, b'{"error": "method not allowed"}\n', "application/json"
        return None
    if not authorized(token, headers):
        why = "missing or wrong bearer token" if token else "set --http-token: app routes need one"
        return 401, json.dumps({"error": why}).encode() + b"\n", "application/json"
    request = HttpRequest(method, parts.path, parse_qs(parts.query), headers, body)
    try:
        result = await handler(request)
    except Exception:
        log.exception("@app.http %s %s failed", method, parts.path)
        return 500, b'{"error": "internal error"}\n', "application/json"
    if not isinstance(result, HttpResponse):
        result = HttpResponse(200, result)
    if isinstance(result.body, bytes):
        return result.status, result.body, result.content_type
    try:
        payload = json.dumps(result.body).encode() + b"\n"
    except (TypeError, ValueError):
        log.exception("@app.http %s %s: the answer is not JSON-able", method, parts.path)
        return 500, b'{"error": "internal error"}\n', "application/json"
    return result.status, payload, "application/json"
