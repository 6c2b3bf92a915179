"""The serving loop: registers the core's sockets with asyncio, runs one task
per request, reloads the route script on SIGHUP and drains on SIGINT/SIGTERM
(see `sipr._lifecycle`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Coroutine, Generator, Sequence
from typing import Any

from sipr import _core, _gc, _lifecycle, _loop, _protocols, corelog, events, workers
from sipr._deadlines import Deadlines
from sipr._eager import EagerTasks
from sipr._protocols import AppLike, Handler
from sipr._secret import branch_secret
from sipr._watchdog import Watchdog
from sipr.control.server import ControlServer
from sipr.logs import announce, current_request
from sipr.onreply import ReplyRunner
from sipr.runtime import ReloadError, RuntimeConfig
from sipr.security import SecurityRuntime
from sipr.settings import (
    ConnectionSettings,
    ControlSettings,
    DnsSettings,
    RunSettings,
    TlsSettings,
    default,
)

log = logging.getLogger("sipr")

HandlerCoroutine = Coroutine[Any, Any, None]


class Server:
    def __init__(
        self,
        app: AppLike,
        listen: Sequence[str],
        control: ControlSettings | None = None,
        *,
        source: str | None = None,
        drain_timeout: float = default(RunSettings, "drain_timeout"),
        tls: TlsSettings | None = None,
        connections: ConnectionSettings | None = None,
        dns: DnsSettings | None = None,
    ) -> None:
        if app.route_handler is None:
            raise RuntimeError("the app has no @app.route handler")
        self.app = app
        self.listen = list(listen)
        #: What `sipr run` was given (path or module:attr): reloads import it again.
        self.source = source
        # Runtime settings (`self.config`), first taken from the app; a
        # reload keeps them.
        route = app.route_settings
        self.route_deadline = route.route_deadline
        self.default_reply = route.default_reply
        self.deadline_reply = route.deadline_reply
        self.stall_threshold = route.stall_threshold
        self.drain_timeout = drain_timeout
        self._timers = app.timer_settings.as_dict()
        # Before the core runs, `core.*` settings changed with cfg.set.
        self._core_settings: dict[str, int] = {
            "max_pending": app.core_settings.max_pending,
            "retry_after": app.core_settings.retry_after,
        }
        # `dns.*` settings changed with cfg.set before the core runs.
        self._dns_settings: dict[str, float] = {}
        self.config = RuntimeConfig(self)
        self.reloads = 0
        #: Apps replaced by reloads whose handler tasks are still running.
        self.retiring: list[Any] = []
        self._reload_lock = asyncio.Lock()
        #: Set by a second SIGINT/SIGTERM: stop waiting for anything.
        self.aborted = asyncio.Event()
        #: When the shutdown drain must end (loop time), once it started.
        self.drain_deadline: float | None = None
        self.control_settings = control
        self.control: ControlServer | None = None
        self.tls = tls or TlsSettings()
        self.connections = connections or ConnectionSettings()
        self.dns = dns or DnsSettings()
        self.core: _core.Core | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Handler tasks of requests a CANCEL can end, by transaction id.
        self.cancellable: dict[int | None, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        #: Set once the core listens and requests are being served.
        self.ready = asyncio.Event()
        # Handlers that suspended (awaited something) and have not finished.
        self.suspended = 0
        self.deadline_expired = 0
        self.expired: set[asyncio.Task[None]] = set()
        self.deadlines: Deadlines | None = None
        #: Bans, flood detection, ACLs, topology hiding of this server (docs/security.md).
        self.security = SecurityRuntime(self)
        self.watchdog: Watchdog | None = None
        self.busy: threading.Event | None = None
        self.inline = 0
        self.loop = asyncio.get_running_loop()
        # Python 3.12+ runs first steps eagerly inside real tasks (set below);
        # on 3.11 App(eager=True) runs them outside a task.
        self.eager = route.eager and not hasattr(asyncio, "eager_task_factory")
        #: 3.11 without App(eager=True): Tasks whose first step runs at once.
        self.eager_tasks: EagerTasks | None = None
        #: The running app's background work (`@app.every`, queues), once started.
        self.services: _protocols.Running = _lifecycle.Services(app)
        self.replies = ReplyRunner(self.loop, lambda: self.app.on_reply_handler)
        # Bound once: a new bound method per task would cost an allocation.
        self._on_task_done = self._task_done

    def _start_core(self) -> _core.Core:
        """The one place the settings become the core's arguments."""
        app, tls, conn = self.app, self.tls, self.connections
        settings = app.core_settings
        return _core.Core(
            self.listen,
            max_pending=self._core_settings["max_pending"],
            retry_after=self._core_settings["retry_after"],
            max_message_size=settings.max_message_size,
            in_dialog_to_app=app.in_dialog_handler is not None,
            record_route=settings.record_route,
            udp_reader=settings.udp_reader,
            tls_cert=str(tls.cert) if tls.cert else None,
            tls_key=str(tls.key) if tls.key else None,
            tls_sni=[(domain, str(cert), str(key)) for domain, cert, key in tls.sni],
            tls_client_ca=str(tls.client_ca) if tls.client_ca else None,
            tls_verify_client=tls.verify_client,
            tls_verify_client_on=list(tls.verify_client_on),
            tls_ca=str(tls.ca) if tls.ca else None,
            connect_timeout=conn.connect_timeout,
            connect_backoff=conn.connect_backoff,
            connection_lifetime=conn.connection_lifetime,
            max_connections=conn.max_connections,
            resolvers=list(self.dns.resolvers),
            branch_secret=branch_secret(),
            # `--workers`: the sockets the supervisor bound (decision 0050).
            listen_fds=workers.listen_fds(self.listen),
        )

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        close_logs = corelog.attach(loop)
        self.core = core = self._start_core()
        workers.serving(core)  # the address registrations name as their owner (0052)
        core.set_force_rport(self.app.core_settings.force_rport)
        core.set_timers(**self._timers)
        core.set_loop(loop)  # relay() futures without a getpid() each (decision 0039)
        for name, value in self._dns_settings.items():
            setattr(core.dns(), name, value)
        self.app._core = core
        self.app._server = self
        core.set_on_reply(self.app.on_reply_handler is not None)
        events.serve(core, self.app.events)
        await self.security.start()
        self.deadlines = Deadlines(loop, self._expire)
        self.loop = loop
        self.watchdog = Watchdog(
            loop, self.stall_threshold, lambda: bool(self.tasks) or self.inline > 0
        )
        self.busy = self.watchdog.busy
        self.watchdog.start()
        eager_factory = getattr(asyncio, "eager_task_factory", None)
        if eager_factory is not None:
            # Python 3.12+: a handler runs its first step inside create_task.
            loop.set_task_factory(eager_factory)
        elif EagerTasks.usable(loop):
            self.eager_tasks = EagerTasks(loop)
        services = _lifecycle.Services(self.app)
        await services.start()
        self.services = services
        udp_fds = core.udp_fds() if self.app.core_settings.udp_reader == "loop" else []
        for index, fd in enumerate(udp_fds):
            loop.add_reader(fd, self._on_udp, index)
        loop.add_reader(core.wake_fd(), self._on_streams)
        loop.add_reader(core.timer_fd(), self._on_timer)
        try:
            if self.control_settings is not None:
                # Before "listening on": once that is printed, `sipr ctl` works.
                self.control = ControlServer(self, self.control_settings)
                await self.control.start()
            log.info("event loop: %s", _loop.loop_name(loop))
            for transport, host, port in core.local_addrs():
                shown = f"[{host}]" if ":" in host else host
                announce(f"sipr: listening on {transport}:{shown}:{port}")
            _gc.tune_for_serving()
            self.ready.set()
            await self.stopping.wait()
            await _lifecycle.drain(self)
        finally:
            for fd in udp_fds:
                loop.remove_reader(fd)
            loop.remove_reader(core.wake_fd())
            loop.remove_reader(core.timer_fd())
            await self.services.stop(self._queue_budget())
            await _lifecycle.retire_all(self)
            await self.security.stop()
            self.deadlines.close()
            self.watchdog.stop()
            if self.eager_tasks is not None:
                self.eager_tasks.close()  # the loop's own call_soon again
                self.eager_tasks = None
            if self.control is not None:  # answered during the drain above
                await self.control.stop()
            core.stop()
            close_logs()
            events.unserve(self.app.events)
            self.app._server = None

    def stop(self) -> None:
        """SIGINT/SIGTERM: drain, then exit; a second one stops waiting."""
        if self.stopping.is_set():
            if not self.aborted.is_set():
                log.warning("second signal: exiting without waiting for in-flight transactions")
                self.aborted.set()
            return
        self.stopping.set()

    def _queue_budget(self) -> float:
        """How long app queues may still take to empty at shutdown: what is
        left of the drain bound."""
        if self.aborted.is_set() or self.drain_deadline is None:
            return 0.0
        return max(0.0, self.drain_deadline - self.loop.time())

    async def reload(self) -> dict[str, object]:
        """Imports the route script again; new requests go to its handlers,
        running handler tasks finish on the old code. Raises ReloadError (and
        keeps the running app) if the script fails to import or has no app."""
        if self.stopping.is_set():
            log.error("reload refused: shutting down")
            raise ReloadError("shutting down")
        async with self._reload_lock:
            old = self.app
            try:
                result = await _lifecycle.reload(self)
            except ReloadError as e:
                if old.events.reload:
                    old.events.emit(
                        old.events.reload, events.ReloadEvent(False, self.source, str(e))
                    )
                raise
            events.swap(self.core, old.events, self.app.events)
            if self.app.events.reload:
                self.app.events.emit(self.app.events.reload, events.ReloadEvent(True, self.source))
            return result

    async def reload_logged(self) -> None:
        """SIGHUP: a reload whose refusal is only logged."""
        try:
            await self.reload()
        except ReloadError:
            pass  # already logged as one line
        except Exception:
            log.exception("reload failed")

    # -- runtime settings (self.config) --------------------------------------

    def timers(self) -> dict[str, float]:
        if self.core is None:
            return dict(self._timers)
        return dict(zip(("t1", "t2", "t4", "timer_c"), self.core.timers(), strict=True))

    def set_timer(self, key: str, seconds: float) -> None:
        self._timers[key] = seconds
        if self.core is not None:
            self.core.set_timers(**{key: seconds})

    def core_setting(self, name: str) -> int:
        if self.core is not None:
            return int(getattr(self.core, name))
        return self._core_settings[name]

    def set_core_setting(self, name: str, value: int) -> None:
        if name not in self._core_settings:
            raise ValueError(f"no core setting {name!r}")
        self._core_settings[name] = value
        if self.core is not None:
            setattr(self.core, name, value)

    def dns_setting(self, name: str) -> float:
        """`dns.*` settings: the core's once it runs, else what will be applied."""
        if self.core is not None:
            return float(getattr(self.core.dns(), name))
        return float(self._dns_settings.get(name, default(DnsSettings, name)))

    def set_dns_setting(self, name: str, value: float) -> None:
        self._dns_settings[name] = value
        if self.core is not None:
            setattr(self.core.dns(), name, value)

    def set_stall_threshold(self, seconds: float) -> None:
        self.stall_threshold = seconds
        if self.watchdog is not None:
            self.watchdog.threshold = seconds

    def reload_tls(self) -> None:
        """SIGHUP: re-read the TLS certificates; open connections keep theirs."""
        if self.core is None or not self.tls.configured:
            return
        try:
            self.core.reload_tls()
        except ValueError as e:
            log.error("sipr: TLS reload failed, keeping the old certificates: %s", e)
            return
        log.info("sipr: TLS certificates reloaded")

    def _on_udp(self, index: int) -> None:
        core = self.core
        assert core is not None
        for req in core.poll_udp(index):
            self._dispatch(req)
        if core.has_python_work:
            self._python_work(core)

    def _on_streams(self) -> None:
        core = self.core
        assert core is not None
        for req in core.drain_streams():
            self._dispatch(req)
        if core.has_python_work:
            self._python_work(core)

    def _on_timer(self) -> None:
        core = self.core
        assert core is not None
        for req in core.on_timer():
            self._dispatch(req)
        if core.has_python_work:
            self._python_work(core)

    def _python_work(self, core: _core.Core) -> None:
        if core.has_replies:
            self.replies.run(core)
        if core.has_cancelled:
            self._cancel_tasks()

    def _cancel_tasks(self) -> None:
        assert self.core is not None
        for txn in self.core.take_cancelled():
            task = self.cancellable.pop(txn, None)
            if task is not None:
                task.cancel()

    def _dispatch(self, req: _core.Request) -> None:
        handler = self.app.route_handler
        if req.in_dialog and self.app.in_dialog_handler is not None:
            handler = self.app.in_dialog_handler
        assert handler is not None
        busy = self.busy
        if busy is not None and not busy.is_set():
            busy.set()  # the watchdog clears it itself once nothing runs
        if self.eager:
            # App(eager=True) on Python 3.11: the first step runs here, outside
            # any task; only a handler that suspends gets one.
            coro = handler(req)
            self.inline += 1  # visible to the watchdog while the step runs
            token = current_request.set(req)
            try:
                first = coro.send(None)
            except StopIteration:
                self._answer_if_silent(req)
                req._finish()
                return
            except Exception:
                self._handler_failed(req)
                req._finish()
                return
            finally:
                self.inline -= 1
                current_request.reset(token)
            task = self.loop.create_task(self._run(handler, req, coro, first))
        elif self.eager_tasks is not None:
            self.inline += 1  # visible to the watchdog while the first step runs
            try:
                task = self.eager_tasks.start(self._run(handler, req))
            finally:
                self.inline -= 1
        else:
            task = self.loop.create_task(self._run(handler, req))
        if task.done():  # ran to completion in its first step
            return
        # Suspended (or, on a loop without eager steps, not started): counted
        # and given its deadline until _run's `finally` (or _task_done, for
        # a task cancelled before it ran) untracks it.
        self.tasks.add(task)
        self.suspended += 1
        assert self.deadlines is not None
        self.deadlines.add(task, self.loop.time() + (req.deadline or self.route_deadline))
        if self.eager_tasks is None:
            task.add_done_callback(self._on_task_done)
        if req.method == "INVITE":
            # Removed by _run when the handler ends, or by _cancel_tasks. (A
            # per-task closure as a second done callback cost ~400 bytes per
            # suspended INVITE.)
            self.cancellable[req._txn] = task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._untrack(task)

    def _untrack(self, task: asyncio.Task[None] | None) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
            self.suspended -= 1
            assert self.deadlines is not None
            self.deadlines.finished()

    def _expire(self, task: asyncio.Task[None]) -> None:
        self.expired.add(task)
        task.cancel()

    def _answer_if_silent(self, req: _core.Request) -> None:
        if not req.handled and req.method != "ACK":
            status, reason = self.default_reply
            log.info("no action for %s (Call-ID %s): answering %d", req.method, req.call_id, status)
            req.reply(status, reason)

    def _handler_failed(self, req: _core.Request) -> None:
        log.exception("route handler failed (Call-ID %s)", req.call_id)
        exc = sys.exc_info()[1]
        if self.eager and isinstance(exc, RuntimeError) and "task" in str(exc):
            log.error(
                "App(eager=True) runs a handler's first step outside any asyncio task on "
                "Python 3.11: move timeouts / cancel scopes after the first await, or drop eager"
            )
        if not req.handled and req.method != "ACK":
            try:
                req.reply(500)
            except _core.TransactionError:
                pass

    async def _run(
        self,
        handler: Handler,
        req: _core.Request,
        coro: HandlerCoroutine | None = None,
        first: Any = None,
    ) -> None:
        txn = req._txn  # read now: forward() drops it from the request
        # Task-local: log lines of this handler (the app's too) get the Call-ID.
        current_request.set(req)
        try:
            if coro is None:
                # Awaited, not stepped by hand: a handler that returns without
                # suspending ends here with no StopIteration raised and caught.
                await handler(req)
            else:
                await _Resume(coro, first)
            if not req.handled:  # checked here: no call per handled request
                self._answer_if_silent(req)
        except asyncio.CancelledError:
            task = asyncio.current_task(self.loop)
            if task is not None and task in self.expired:
                self.expired.discard(task)
                self.deadline_expired += 1
                log.warning("route deadline reached for %s (Call-ID %s)", req.method, req.call_id)
                if not req.handled and req.method != "ACK":
                    status, reason = self.deadline_reply
                    try:
                        req.reply(status, reason)
                    except _core.TransactionError:
                        pass
                return
            log.info("handler cancelled: %s (Call-ID %s)", req.method, req.call_id)
            raise
        except Exception:
            self._handler_failed(req)
        finally:
            if self.tasks:  # else nothing is suspended, this handler neither
                # With the loop given, 3.11 skips the getpid() of get_running_loop().
                self._untrack(asyncio.current_task(self.loop))
            self.cancellable.pop(txn, None)
            req._finish()


class _Resume(Generator[Any, Any, None]):
    """Continues a coroutine whose first step already ran, inside the
    awaiting task: values and exceptions (cancellation) pass straight through.

    It is its own iterator (not a generator `__await__`): one small object per
    suspended handler instead of a generator and its frame (~300 bytes each
    while suspended)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: HandlerCoroutine, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        return self

    def __next__(self) -> Any:
        first = self.first
        if first is not _TAKEN:
            self.first = _TAKEN
            return first  # the value the first step yielded, for the task
        return self.coro.send(None)  # StopIteration(value) ends the await

    def send(self, value: Any) -> Any:
        if self.first is not _TAKEN:
            return self.__next__()
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.first = _TAKEN
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()


_TAKEN = object()


def run(
    app: AppLike,
    settings: RunSettings,
    *,
    source: str | None = None,
    control: ControlSettings | None = None,
    tls: TlsSettings | None = None,
    connections: ConnectionSettings | None = None,
    dns: DnsSettings | None = None,
) -> int:
    """Serves until SIGINT/SIGTERM; returns the exit status (0 after a
    drain, 1 when a second signal cut it short)."""
    from sipr import logs

    logs.setup(settings.log_level, settings.log_format)
    coro = _main(app, settings, source, control, tls, connections, dns)
    return _loop.run(coro, settings.event_loop)


async def _main(
    app: AppLike,
    settings: RunSettings,
    source: str | None,
    control: ControlSettings | None,
    tls: TlsSettings | None,
    connections: ConnectionSettings | None,
    dns: DnsSettings | None,
) -> int:
    server = Server(
        app,
        settings.listen,
        control,
        source=source,
        drain_timeout=settings.drain_timeout,
        tls=tls,
        connections=connections,
        dns=dns,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        server.reload_tls()
        task = loop.create_task(server.reload_logged())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await server.serve()
    return 1 if server.aborted.is_set() else 0
