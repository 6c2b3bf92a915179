"""`sipr.App`: the handlers and settings of one routing application."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sipr._core import Core
from sipr._protocols import Handler, Job, RpcMethod, ServerView, Settings
from sipr.dialogs import Dialogs
from sipr.events import (
    DialogEvent,
    Events,
    RegistrationEvent,
    ReloadEvent,
    SendEvent,
    TimeoutEvent,
)
from sipr.http_routes import HttpHandler, check_route
from sipr.security import Security, validate
from sipr.settings import (
    CoreSettings,
    RouteSettings,
    RunSettings,
    TimerSettings,
    default,
    env_flag,
)
from sipr.workqueue import WorkQueue

H = TypeVar("H", bound=Callable[..., Any])


class App:
    """Holds route handlers and settings; `sipr run` (or `App.run`) serves it.

    `default_reply` answers a request whose handler returned without acting,
    so a caller is never left retransmitting into silence. `timers` overrides
    the RFC 3261 timer values in seconds (keys `t1`, `t2`, `t4`, `timer_c`),
    e.g. `App(timers={"t1": 0.05})` in tests, so transactions expire quickly.
    `force_rport` answers every UDP request at its source address and port,
    as if its top Via had `rport` (RFC 3581 §4, Kamailio's `force_rport()`):
    for an edge proxy facing phones behind NAT. Per request:
    `req.force_rport()`.
    Every argument and its default: docs/settings.md (`CoreSettings`,
    `TimerSettings`, `RouteSettings`).
    """

    def __init__(
        self,
        *,
        record_route: bool = default(CoreSettings, "record_route"),
        default_reply: tuple[int, str | None] = default(RouteSettings, "default_reply"),
        max_pending: int = default(CoreSettings, "max_pending"),
        retry_after: int = default(CoreSettings, "retry_after"),
        timers: dict[str, float] | None = None,
        route_deadline: float = default(RouteSettings, "route_deadline"),
        deadline_reply: tuple[int, str | None] = default(RouteSettings, "deadline_reply"),
        stall_threshold: float = default(RouteSettings, "stall_threshold"),
        eager: bool | None = None,
        udp_reader: str | None = None,
        force_rport: bool = default(CoreSettings, "force_rport"),
        security: Security | None = None,
    ) -> None:
        if route_deadline <= 0 or stall_threshold <= 0:
            raise ValueError("route_deadline and stall_threshold must be positive seconds")
        reader = udp_reader or env_flag("SIPR_UDP_READER") or default(CoreSettings, "udp_reader")
        if reader not in ("loop", "thread"):
            raise ValueError(f'udp_reader must be "loop" or "thread", not {reader!r}')
        self.core_settings = CoreSettings(
            max_pending=max_pending,
            retry_after=retry_after,
            record_route=record_route,
            force_rport=force_rport,
            # "thread": a Rust thread per UDP socket answers native REGISTERs
            # itself and queues the rest for the loop (docs/decisions/0019).
            udp_reader=reader,
        )
        self.timer_settings = TimerSettings.with_overrides(timers)
        self.route_settings = RouteSettings(
            route_deadline=route_deadline,
            default_reply=default_reply,
            deadline_reply=deadline_reply,
            stall_threshold=stall_threshold,
            # Run each handler's first step (up to its first await) at once,
            # with no asyncio Task unless it suspends: ~3 µs less per request.
            # On Python 3.11 that step runs outside any task, so it must not
            # enter asyncio.timeout() / anyio cancel scopes before its first
            # await. Python 3.12+ always runs first steps eagerly inside real
            # tasks.
            eager=eager if eager is not None else env_flag("SIPR_EAGER") == "1",
        )
        #: Bans, flood detection, limits, ACLs, topology hiding (docs/security.md).
        self.security = security if security is not None else Security()
        validate(self.security)
        self.queues: dict[str, WorkQueue] = {}
        self.periodic: list[tuple[float, Job]] = []
        #: The running server and core while served (`sipr._core.Core`, e.g. for `stats()`).
        self._server: ServerView | None = None
        self._core: Core | None = None
        self.route_handler: Handler | None = None
        self.in_dialog_handler: Handler | None = None
        #: `@app.on_reply`: sees every relayed response (sync or async).
        self.on_reply_handler: Callable[..., object] | None = None
        #: Control methods the app adds (`@app.rpc`), by name.
        self.rpc_methods: dict[str, RpcMethod] = {}
        self.startup: list[Job] = []
        self.shutdown: list[Job] = []
        #: Services' work still in flight (calls up, records unwritten): a
        #: shutdown drain waits, within its bound, while any returns non-zero.
        self.drain_checks: list[Callable[[], int]] = []
        #: Services' statistics, merged into `stats()`.
        self.stat_hooks: list[Callable[[], dict[str, int]]] = []
        #: Tracked dialogs and their profiles (`req.track_dialog()`).
        self.dialogs = Dialogs(self)
        #: Event hooks (`sipr.events`): called only where some are registered.
        self.events = Events()
        #: The app's HTTP routes on the control listener (`@app.http`).
        self.http_routes: dict[tuple[str, str], HttpHandler] = {}

    # The settings under their `App(...)` argument names (read-only).
    @property
    def record_route(self) -> bool:
        return self.core_settings.record_route

    @property
    def force_rport(self) -> bool:
        return self.core_settings.force_rport

    @property
    def max_pending(self) -> int:
        return self.core_settings.max_pending

    @property
    def retry_after(self) -> int:
        return self.core_settings.retry_after

    @property
    def udp_reader(self) -> str:
        return self.core_settings.udp_reader

    @property
    def timers(self) -> dict[str, float]:
        return self.timer_settings.as_dict()

    @property
    def default_reply(self) -> tuple[int, str | None]:
        return self.route_settings.default_reply

    @property
    def deadline_reply(self) -> tuple[int, str | None]:
        return self.route_settings.deadline_reply

    @property
    def route_deadline(self) -> float:
        return self.route_settings.route_deadline

    @property
    def stall_threshold(self) -> float:
        return self.route_settings.stall_threshold

    @property
    def eager(self) -> bool:
        return self.route_settings.eager

    def route(self, fn: H) -> H:
        """Register the handler for initial requests (Kamailio's request_route)."""
        self.route_handler = _checked_handler(fn, "route")
        return fn

    def in_dialog(self, fn: H) -> H:
        """Register the handler for in-dialog requests (To tag present)."""
        self.in_dialog_handler = _checked_handler(fn, "in_dialog")
        return fn

    def on_reply(self, fn: H) -> H:
        """Register a handler for the responses of relayed requests (Kamailio's
        onreply_route): `def on_reply(reply)` or `async def`; it may change
        `reply.headers` and `reply.body` before the response goes upstream.
        Without it responses never reach Python (docs/routing.md)."""
        self.on_reply_handler = _checked_reply_handler(fn, "on_reply")  # type: ignore[assignment]
        return fn

    def on_startup(self, fn: H) -> H:
        self.startup.append(_checked_handler(fn, "on_startup", nargs=0))
        return fn

    def on_shutdown(self, fn: H) -> H:
        self.shutdown.append(_checked_handler(fn, "on_shutdown", nargs=0))
        return fn

    def on_registration(
        self, fn: Callable[[RegistrationEvent], Awaitable[None]]
    ) -> Callable[[RegistrationEvent], Awaitable[None]]:
        """Called when a contact is added, refreshed, removed or expires
        (Kamailio's usrloc callbacks). With such a hook, REGISTERs are
        handled in Python (`Registrar.save`), not by the core's native path."""
        self.events.registration.append(_checked_handler(fn, "on_registration"))
        return fn

    def on_reload(
        self, fn: Callable[[ReloadEvent], Awaitable[None]]
    ) -> Callable[[ReloadEvent], Awaitable[None]]:
        """Called after a reload of the route script (on the new app), or
        after a refused one (on the running app, `event.ok` False)."""
        self.events.reload.append(_checked_handler(fn, "on_reload"))
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
        self.events.timeout.append(_checked_handler(fn, "on_timeout"))
        return fn

    def on_dialog_start(
        self, fn: Callable[[DialogEvent], Awaitable[None]]
    ) -> Callable[[DialogEvent], Awaitable[None]]:
        """Called when a tracked dialog is confirmed: its first 2xx went
        upstream (Kamailio's `event_route[dialog:start]`)."""
        self.events.dialog_start.append(_checked_handler(fn, "on_dialog_start"))
        return fn

    def on_dialog_end(
        self, fn: Callable[[DialogEvent], Awaitable[None]]
    ) -> Callable[[DialogEvent], Awaitable[None]]:
        """Called once for every tracked dialog that leaves the table:
        `event.reason` says why (a BYE, its timeout, a failed keepalive,
        `dlg.end`, shutdown, or "failed": a setup that was never answered;
        Kamailio's `event_route[dialog:end]` and `[dialog:failed]`)."""
        self.events.dialog_end.append(_checked_handler(fn, "on_dialog_end"))
        return fn

    def every(self, seconds: float) -> Callable[[H], H]:
        """Run an async job every `seconds` while serving (Kamailio rtimer)."""
        if seconds <= 0:
            raise ValueError("@app.every needs a positive number of seconds")

        def register(fn: H) -> H:
            self.periodic.append((seconds, _checked_handler(fn, "every", nargs=0)))
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
            self.rpc_methods[name] = fn
            return fn

        return register

    def http(self, method: str, path: str) -> Callable[[H], H]:
        """Add an HTTP route to the control listener (`sipr run --http`):
        an async function taking a `sipr.HttpRequest`, returning what
        `json.dumps` takes or a `sipr.HttpResponse`. It needs the bearer
        token (`--http-token`), always. docs/decisions/0047."""
        key = check_route(method, path)

        def register(fn: H) -> H:
            self.http_routes[key] = _checked_handler(fn, "http")
            return fn

        return register

    def queue(self, name: str, *, maxsize: int = 10_000, workers: int = 1) -> WorkQueue:
        """A bounded in-process work queue drained by `@queue.consumer` tasks."""
        if name in self.queues:
            return self.queues[name]
        q = self.queues[name] = WorkQueue(name, maxsize=maxsize, workers=workers)
        return q

    @property
    def config(self) -> Settings:
        """The running server's settings (`sipr.runtime.RuntimeConfig`):
        `app.config.set("tm.t1", 0.1)` acts like `sipr ctl cfg.set`."""
        server = self._server
        if server is None:
            raise RuntimeError("app.config is only there while the app is served")
        return server.config

    def stats(self) -> dict[str, int]:
        """Live counters of the running server (core and Python side)."""
        server = self._server
        if server is None or server.core is None:
            return {}
        out = dict(server.core.stats())
        # A handler in its first step (eager) is not in `tasks` yet.
        out["handlers.running"] = len(server.tasks) + server.inline
        out["handlers.suspended"] = server.suspended
        out["handlers.deadline_expired"] = server.deadline_expired
        out["loop.stalls"] = server.watchdog.stalls if server.watchdog is not None else 0
        out["events.dispatched"] = self.events.dispatched
        out["events.sends_refused"] = self.events.sends_refused
        out["events.core_calls"] = server.core.event_hook_calls()
        for name, q in self.queues.items():
            out[f"queue.{name}.size"] = q.qsize()
            out[f"queue.{name}.processed"] = q.processed
            out[f"queue.{name}.dropped"] = q.dropped
        out.update(self.dialogs.stats())
        for hook in self.stat_hooks:
            out.update(hook())
        return out

    def run(
        self,
        listen: list[str] | None = None,
        *,
        log_level: str = default(RunSettings, "log_level"),
        log_format: str = default(RunSettings, "log_format"),
        drain_timeout: float = default(RunSettings, "drain_timeout"),
        event_loop: str = default(RunSettings, "event_loop"),
    ) -> int:
        """Serve until SIGINT/SIGTERM (blocking); returns the exit status.
        (No reload: only `sipr run` knows the script to import again.)"""
        from sipr.server import run

        settings = RunSettings(
            listen=tuple(listen) if listen else default(RunSettings, "listen"),
            log_level=log_level,
            log_format=log_format,
            drain_timeout=drain_timeout,
            event_loop=event_loop,
        )
        return run(self, settings)


def _checked_handler(fn: Callable[..., Any], what: str, nargs: int = 1) -> Any:
    """`fn` when it is an `async def` taking `nargs` positional arguments."""
    if not callable(fn):
        raise TypeError(f"@app.{what} expects a function, got {fn!r}")
    name = getattr(fn, "__name__", repr(fn))
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@app.{what} handler {name!r} must be 'async def'")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != nargs:
        raise TypeError(f"@app.{what} handler {name!r} must take {nargs} argument(s)")
    return fn


def _checked_reply_handler(fn: object, what: str) -> object:
    """A response handler may be plain or async, and takes the reply."""
    if not callable(fn):
        raise TypeError(f"@app.{what} expects a function, got {fn!r}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 1:
        raise TypeError(
            f"@app.{what} handler {getattr(fn, '__name__', fn)!r} must take 1 argument (the reply)"
        )
    return fn
