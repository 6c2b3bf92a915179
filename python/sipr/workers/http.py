"""The supervisor's `--http` listener: `/rpc` through the aggregator,
`/metrics` with a `worker` label on every sample, `/stats.json` summed."""

from __future__ import annotations

import json
from typing import Any

from sipr.control.http import HttpError, HttpListener
from sipr.control.rpc import RpcError, encode


class WorkersHttp(HttpListener):
    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        ctl: Any = self.ctl
        try:
            if path == "/metrics" and method in ("GET", "HEAD"):
                text = await ctl.metrics()
                return 200, text.encode(), "text/plain; version=0.0.4; charset=utf-8"
            if path == "/stats.json" and method in ("GET", "HEAD"):
                stats = await ctl.registry.call("stats.get", [])
                return 200, json.dumps(stats).encode(), "application/json"
        except RpcError as e:
            raise HttpError(503, e.message) from e
        if path == "/rpc" and method == "POST":
            response = await ctl.registry.handle(body)
            return 200, encode(response) if response is not None else b"", "application/json"
        return await super()._route(method, path, body)
