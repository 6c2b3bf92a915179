"""`sipr.App`: the handlers and settings of one routing application."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sipr._core import Request

Handler = Callable[[Request], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., object])


class App:
    """Holds route handlers and settings; `sipr run` (or `App.run`) serves it.

    `default_reply` answers a request whose handler returned without acting,
    so a caller is never left retransmitting into silence.
    """

    def __init__(
        self,
        *,
        record_route: bool = True,
        default_reply: tuple[int, str | None] = (404, None),
        max_pending: int = 10_000,
        retry_after: int = 5,
    ) -> None:
        self.record_route = record_route
        self.default_reply = default_reply
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.route_handler: Handler | None = None
        self.in_dialog_handler: Handler | None = None
        self.startup: list[Callable[[], Awaitable[None]]] = []
        self.shutdown: list[Callable[[], Awaitable[None]]] = []

    def route(self, fn: H) -> H:
        """Register the handler for initial requests (Kamailio's request_route)."""
        self.route_handler = _checked_handler(fn, "route")  # type: ignore[assignment]
        return fn

    def in_dialog(self, fn: H) -> H:
        """Register the handler for in-dialog requests (To tag present)."""
        self.in_dialog_handler = _checked_handler(fn, "in_dialog")  # type: ignore[assignment]
        return fn

    def on_startup(self, fn: H) -> H:
        self.startup.append(_checked_handler(fn, "on_startup", nargs=0))  # type: ignore[arg-type]
        return fn

    def on_shutdown(self, fn: H) -> H:
        self.shutdown.append(_checked_handler(fn, "on_shutdown", nargs=0))  # type: ignore[arg-type]
        return fn

    def run(self, listen: list[str] | None = None, *, log_level: str = "info") -> None:
        """Serve until SIGINT/SIGTERM (blocking)."""
        from sipr.server import run

        run(self, listen or ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"], log_level=log_level)


def _checked_handler(fn: object, what: str, nargs: int = 1) -> object:
    if not callable(fn):
        raise TypeError(f"@app.{what} expects a function, got {fn!r}")
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@app.{what} handler {getattr(fn, '__name__', fn)!r} must be 'async def'")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != nargs:
        raise TypeError(
            f"@app.{what} handler {fn.__name__!r} must take {nargs} argument(s)"  # type: ignore[attr-defined]
        )
    return fn
