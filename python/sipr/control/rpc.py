"""JSON-RPC 2.0 method registry and dispatch, shared by the Unix-socket and
HTTP listeners.

A method is an `async def` taking its params positionally (a JSON array) or by
name (a JSON object). Arguments that do not fit its signature are an
"invalid params" error naming the method's parameters; a `ValueError` or
`LookupError` raised by the method is reported as an application error with
its message; anything else is an internal error (and logged).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("sipr.control")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: A method refused the request (bad value, unknown name, failed reload).
APP_ERROR = -32000

Method = Callable[..., Awaitable[Any]]


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Registry:
    """Built-in methods plus those `extra()` returns when asked (the app's
    `@app.rpc` methods: read on each call, so a reloaded app's are current)."""

    def __init__(self, extra: Callable[[], dict[str, Method]] = dict) -> None:
        self.builtins: dict[str, Method] = {}
        self.extra = extra

    @property
    def methods(self) -> dict[str, Method]:
        return {**self.extra(), **self.builtins}

    def add(self, name: str, fn: Method) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"RPC method {name!r} must be 'async def'")
        self.builtins[name] = fn

    def describe(self, name: str) -> str:
        """The first line of the method's docstring."""
        fn = self.methods[name]
        doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        return doc

    def signature(self, name: str) -> str:
        params = inspect.signature(self.methods[name]).parameters.values()
        parts = []
        for p in params:
            if p.kind is p.VAR_POSITIONAL:
                parts.append(f"[{p.name.upper()}...]")
            elif p.default is p.empty:
                parts.append(p.name.upper())
            else:
                parts.append(f"[{p.name.upper()}]")
        return " ".join(parts)

    async def call(self, name: str, params: Any = None) -> Any:
        fn = self.methods.get(name)
        if fn is None:
            raise RpcError(METHOD_NOT_FOUND, f"no such method: {name}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if isinstance(params, list):
            args = params
        elif isinstance(params, dict):
            kwargs = params
        elif params is not None:
            raise RpcError(INVALID_PARAMS, "params must be an array or an object")
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            usage = f"{name} {self.signature(name)}".strip()
            message = f"bad arguments for {name} ({e}); usage: {usage}"
            raise RpcError(INVALID_PARAMS, message) from None
        try:
            return await fn(*args, **kwargs)
        except RpcError:
            raise
        except (ValueError, LookupError) as e:
            raise RpcError(APP_ERROR, str(e) or type(e).__name__) from e
        except Exception as e:
            log.exception("RPC method %s failed", name)
            raise RpcError(INTERNAL_ERROR, f"{name} failed: {type(e).__name__}: {e}") from e

    async def handle(self, raw: bytes) -> dict[str, Any] | list[Any] | None:
        """One JSON-RPC request (or batch) → its response; None for notifications."""
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(None, PARSE_ERROR, f"parse error: {e}")
        if isinstance(msg, list):
            if not msg:
                return _error(None, INVALID_REQUEST, "empty batch")
            out = [r for r in [await self._one(m) for m in msg] if r is not None]
            return out or None
        return await self._one(msg)

    async def _one(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, 'not a JSON-RPC 2.0 request ("jsonrpc": "2.0")')
        req_id = msg.get("id")
        method = msg.get("method")
        if not isinstance(method, str):
            return _error(req_id, INVALID_REQUEST, "method must be a string")
        try:
            result = await self.call(method, msg.get("params"))
        except RpcError as e:
            response = _error(req_id, e.code, e.message)
        else:
            response = {"jsonrpc": "2.0", "id": req_id, "result": result}
        return None if "id" not in msg else response


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


def encode(response: Any) -> bytes:
    """Compact JSON; values JSON cannot hold (a set, a path) become strings."""
    return json.dumps(response, separators=(",", ":"), default=str).encode()
