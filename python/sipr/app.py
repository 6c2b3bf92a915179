"""`sipr.App`: the handlers and settings of one routing application."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sipr._core import Request
from sipr.events import Events, RegistrationEvent, ReloadEvent, SendEvent, TimeoutEvent
from sipr.http_routes import HttpHandler, check_route
from sipr.workqueue import WorkQueue

Handler = Callable[[Request], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., object])


class App:
    """Holds route handlers and settings; `sipr run` (or `App.run`) serves it.

    `default_reply` answers a request whose handler returned without acting,
    so a caller is never left retransmitting into silence. `timers` overrides
    the RFC 3261 timer values in seconds (keys `t1`, `t2`, `t4`, `timer_c`),
    e.g. `App(timers={"t1": 0.05})` in tests, so transactions expire quickly.
    """

    def __init__(
        self,
        *,
        record_route: bool = True,
        default_reply: tuple[int, str | None] = (404, None),
        max_pending: int = 10_000,
        retry_after: int = 5,
        timers: dict[str, float] | None = None,
        route_deadline: float = 30.0,
        deadline_reply: tuple[int, str | None] = (500, None),
        stall_threshold: float = 0.2,
        eager: bool | None = None,
        udp_reader: str | None = None,
    ) -> None:
        self.record_route = record_route
        self.default_reply = default_reply
        self.max_pending = max_pending
        self.retry_after = retry_after
        if route_deadline <= 0 or stall_threshold <= 0:
            raise ValueError("route_deadline and stall_threshold must be positive seconds")
        self.route_deadline = route_deadline
        self.deadline_reply = deadline_reply
        self.stall_threshold = stall_threshold
        # Run each handler's first step (up to its first await) at once, with
        # no asyncio Task unless it suspends: ~3 µs less per request. On
        # Python 3.11 that step runs outside any task, so it must not enter
        # asyncio.timeout() / anyio cancel scopes before its first await.
        # Python 3.12+ always runs first steps eagerly inside real tasks.
        self.eager = eager if eager is not None else os.environ.get("SIPR_EAGER") == "1"
        # "thread": a Rust thread per UDP socket answers native REGISTERs
        # itself and queues the rest for the loop (docs/decisions/0019).
        self.udp_reader = udp_reader or os.environ.get("SIPR_UDP_READER") or "loop"
        if self.udp_reader not in ("loop", "thread"):
            raise ValueError(f'udp_reader must be "loop" or "thread", not {self.udp_reader!r}')
        self.queues: dict[str, WorkQueue] = {}
        self.periodic: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self._server: object | None = None
        self.timers = dict(timers or {})
        unknown = set(self.timers) - {"t1", "t2", "t4", "timer_c"}
        if unknown:
            raise ValueError(f"unknown timer(s) {sorted(unknown)}: use t1, t2, t4, timer_c")
        #: The running core while served (`sipr._core.Core`), e.g. for `stats()`.
        self._core: object | None = None
        self.route_handler: Handler | None = None
        self.in_dialog_handler: Handler | None = None
        #: Control methods the app adds (`@app.rpc`), by name.
        self.rpc_methods: dict[str, Callable[..., Awaitable[object]]] = {}
        self.startup: list[Callable[[], Awaitable[None]]] = []
        self.shutdown: list[Callable[[], Awaitable[None]]] = []
        #: Event hooks (`sipr.events`): called only where some are registered.
        self.events = Events()
        #: The app's HTTP routes on the control listener (`@app.http`).
        self.http_routes: dict[tuple[str, str], HttpHandler] = {}

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

    def on_registration(
        self, fn: Callable[[RegistrationEvent], Awaitable[None]]
    ) -> Callable[[RegistrationEvent], Awaitable[None]]:
        """Called when a contact is added, refreshed, removed or expires
        (Kamailio's usrloc callbacks). With such a hook, REGISTERs are
        handled in Python (`Registrar.save`), not by the core's native path."""
        self.events.registration.append(_checked_handler(fn, "on_registration"))  # type: ignore[arg-type]
        return fn

    def on_reload(
        self, fn: Callable[[ReloadEvent], Awaitable[None]]
    ) -> Callable[[ReloadEvent], Awaitable[None]]:
        """Called after a reload of the route script (on the new app), or
        after a refused one (on the running app, `event.ok` False)."""
        self.events.reload.append(_checked_handler(fn, "on_reload"))  # type: ignore[arg-type]
        return fn

    def on_send(self, fn: Callable[[SendEvent], bool | None]) -> Callable[[SendEvent], bool | None]:
        """Called as each relayed or forwarded request is about to leave,
        with its destination (Kamailio's `onsend_route`); returning False
        keeps it from being sent: the branch counts as a 403, a stateless
        forward is answered 403. A plain function (`def`), since it decides
        there and then; it must not block nor call back into sipr."""
        if not callable(fn) or inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@app.on_send hook {getattr(fn, '__name__', fn)!r} must be a plain function "
                "(def, not async def): it decides as the request leaves"
            )
        self.events.send.append(fn)
        return fn

    def on_timeout(
        self, fn: Callable[[TimeoutEvent], Awaitable[None]]
    ) -> Callable[[TimeoutEvent], Awaitable[None]]:
        """Called when a relayed branch gets no final answer in time (Timer
        B/F, Timer C, the relay's `timeout=`); the branch counts as a 408."""
        self.events.timeout.append(_checked_handler(fn, "on_timeout"))  # type: ignore[arg-type]
        return fn

    def every(self, seconds: float) -> Callable[[H], H]:
        """Run an async job every `seconds` while serving (Kamailio rtimer)."""
        if seconds <= 0:
            raise ValueError("@app.every needs a positive number of seconds")

        def register(fn: H) -> H:
            self.periodic.append((seconds, _checked_handler(fn, "every", nargs=0)))  # type: ignore[arg-type]
            return fn

        return register

    def rpc(self, name: str) -> Callable[[H], H]:
        """Add a control method (`sipr ctl NAME ARGS...`, JSON-RPC `NAME`): an
        async function taking the call's params; its result must be JSON-able."""
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"@app.rpc needs a method name without spaces, got {name!r}")

        def register(fn: H) -> H:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"@app.rpc({name!r}) handler must be 'async def'")
            self.rpc_methods[name] = fn  # type: ignore[assignment]
            return fn

        return register

    def http(self, method: str, path: str) -> Callable[[H], H]:
        """Add an HTTP route to the control listener (`sipr run --http`):
        an async function taking a `sipr.HttpRequest`, returning what
        `json.dumps` takes or a `sipr.HttpResponse`. It needs the bearer
        token (`--http-token`), always. docs/decisions/0047."""
        key = check_route(method, path)

        def register(fn: H) -> H:
            self.http_routes[key] = _checked_handler(fn, "http")  # type: ignore[assignment]
            return fn

        return register

    def queue(self, name: str, *, maxsize: int = 10_000, workers: int = 1) -> WorkQueue:
        """A bounded in-process work queue drained by `@queue.consumer` tasks."""
        if name in self.queues:
            return self.queues[name]
        q = self.queues[name] = WorkQueue(name, maxsize=maxsize, workers=workers)
        return q

    @property
    def config(self):  # type: ignore[no-untyped-def]
        """The running server's settings (`sipr.runtime.RuntimeConfig`):
        `app.config.set("tm.t1", 0.1)` acts like `sipr ctl cfg.set`."""
        server = self._server
        if server is None:
            raise RuntimeError("app.config is only there while the app is served")
        return server.config  # type: ignore[attr-defined]

    def stats(self) -> dict[str, int]:
        """Live counters of the running server (core and Python side)."""
        server = self._server
        if server is None:
            return {}
        out = dict(server.core.stats())  # type: ignore[attr-defined]
        out["handlers.running"] = len(server.tasks)  # type: ignore[attr-defined]
        out["handlers.suspended"] = server.suspended  # type: ignore[attr-defined]
        out["handlers.deadline_expired"] = server.deadline_expired  # type: ignore[attr-defined]
        out["loop.stalls"] = server.watchdog.stalls  # type: ignore[attr-defined]
        out["events.dispatched"] = self.events.dispatched
        out["events.sends_refused"] = self.events.sends_refused
        out["events.core_calls"] = server.core.event_hook_calls()  # type: ignore[attr-defined]
        for name, q in self.queues.items():
            out[f"queue.{name}.size"] = q.qsize()
            out[f"queue.{name}.processed"] = q.processed
            out[f"queue.{name}.dropped"] = q.dropped
        return out

    def run(
        self,
        listen: list[str] | None = None,
        *,
        log_level: str = "info",
        log_format: str = "text",
        drain_timeout: float = 10.0,
    ) -> int:
        """Serve until SIGINT/SIGTERM (blocking); returns the exit status.
        (No reload: only `sipr run` knows the script to import again.)"""
        from sipr.server import run

        return run(
            self,
            listen or ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
            log_level=log_level,
            log_format=log_format,
            drain_timeout=drain_timeout,
        )


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
