"""The supervisor's `--http` listener: `/rpc` through the aggregator,
`/metrics` with a `worker` label on every sample, `/stats.json` summed."""

from __future__ import annotations

import json
from typing import Any

from sipr.control.http import HttpError, HttpListener, Request
from sipr.control.metrics import CONTENT_TYPE
from sipr.control.rpc import RpcError
from sipr.http_routes import HttpHandler


class WorkersHttp(HttpListener):
    def __init__(self, ctl: Any, host: str, port: int, token: str | None) -> None:
        # No serving loop of its own here: the routes below answer from the workers.
        super().__init__(ctl.registry, None, ctl.started, host, port, token)  # type: ignore[arg-type]
        self.ctl = ctl

    def app_routes(self) -> dict[tuple[str, str], HttpHandler]:
        # The application lives in the workers; the supervisor has no routes of its own.
        return {}

    async def _route(self, request: Request) -> tuple[int, bytes, str]:
        method, path = request.method, request.path
        try:
            if path == "/metrics" and method in ("GET", "HEAD"):
                return 200, await self.ctl.metrics(), CONTENT_TYPE
            if path == "/stats.json" and method in ("GET", "HEAD"):
                stats = await self.ctl.registry.call("stats.get", [])
                return 200, json.dumps(stats).encode(), "application/json"
        except RpcError as e:
            raise HttpError(503, e.message) from e
        return await super()._route(request)
