"""The serving loop: registers the core's sockets with asyncio, runs one task
per request, and shuts down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from sipr import _core
from sipr._deadlines import Deadlines
from sipr._watchdog import Watchdog
from sipr.app import App

log = logging.getLogger("sipr")

#: How long SIGTERM waits for in-flight handlers before exiting anyway.
DRAIN_SECONDS = 5.0


class Server:
    def __init__(
        self, app: App, listen: list[str], core_options: Mapping[str, Any] | None = None
    ) -> None:
        if app.route_handler is None:
            raise RuntimeError("the app has no @app.route handler")
        self.app = app
        self.listen = listen
        # Transport settings (TLS files, connection limits) for `_core.Core`.
        self.core_options = dict(core_options or {})
        self.core: _core.Core | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Handler tasks of requests a CANCEL can end, by transaction id.
        self.cancellable: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        # Handlers that suspended (awaited something) and have not finished.
        self.suspended = 0
        self.deadline_expired = 0
        self.expired: set[asyncio.Task[None]] = set()
        self.deadlines: Deadlines | None = None
        self.watchdog: Watchdog | None = None
        self.busy: threading.Event | None = None
        self.inline = 0
        self.loop = asyncio.get_running_loop()
        # Python 3.12+ runs first steps eagerly inside real tasks (set below);
        # on 3.11 App(eager=True) runs them outside a task.
        self.eager = app.eager and not hasattr(asyncio, "eager_task_factory")
        self.side_tasks: list[asyncio.Task[None]] = []
        # Bound once: a new bound method per task would cost an allocation.
        self._on_task_done = self._task_done

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.core = core = _core.Core(
            self.listen,
            max_pending=self.app.max_pending,
            retry_after=self.app.retry_after,
            in_dialog_to_app=self.app.in_dialog_handler is not None,
            record_route=self.app.record_route,
            **self.core_options,
        )
        if self.app.timers:
            core.set_timers(**self.app.timers)
        self.app._core = core
        self.app._server = self
        self.deadlines = Deadlines(loop, self._expire)
        self.loop = loop
        self.watchdog = Watchdog(
            loop, self.app.stall_threshold, lambda: bool(self.tasks) or self.inline > 0
        )
        self.busy = self.watchdog.busy
        self.watchdog.start()
        if hasattr(asyncio, "eager_task_factory"):
            # Python 3.12+: a handler runs its first step inside create_task.
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        for fn in self.app.startup:
            await fn()
        for q in self.app.queues.values():
            q.start()
        for seconds, fn in self.app.periodic:
            self.side_tasks.append(loop.create_task(self._every(seconds, fn)))
        for index, fd in enumerate(core.udp_fds()):
            loop.add_reader(fd, self._on_udp, index)
        loop.add_reader(core.wake_fd(), self._on_streams)
        loop.add_reader(core.timer_fd(), self._on_timer)
        for transport, host, port in core.local_addrs():
            shown = f"[{host}]" if ":" in host else host
            print(f"sipr: listening on {transport}:{shown}:{port}", file=sys.stderr, flush=True)
        try:
            await self.stopping.wait()
        finally:
            for fd in core.udp_fds():
                loop.remove_reader(fd)
            loop.remove_reader(core.wake_fd())
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=DRAIN_SECONDS)
            loop.remove_reader(core.timer_fd())
            for t in self.side_tasks:
                t.cancel()
            await asyncio.gather(*self.side_tasks, return_exceptions=True)
            for q in self.app.queues.values():
                await q.stop(DRAIN_SECONDS)
            for fn in self.app.shutdown:
                await fn()
            self.deadlines.close()
            self.watchdog.stop()
            core.stop()
            self.app._server = None

    def stop(self) -> None:
        self.stopping.set()

    def reload_tls(self) -> None:
        """SIGHUP: re-read the TLS certificates; open connections keep theirs."""
        if self.core is None:
            return
        try:
            self.core.reload_tls()
        except ValueError as e:
            print(f"sipr: TLS reload failed, keeping the old certificates: {e}", file=sys.stderr)
            return
        print("sipr: TLS certificates reloaded", file=sys.stderr, flush=True)

    def _on_udp(self, index: int) -> None:
        core = self.core
        assert core is not None
        for req in core.poll_udp(index):
            self._dispatch(req)
        if core.has_cancelled:
            self._cancel_tasks()

    def _on_streams(self) -> None:
        core = self.core
        assert core is not None
        for req in core.drain_streams():
            self._dispatch(req)
        if core.has_cancelled:
            self._cancel_tasks()

    def _on_timer(self) -> None:
        core = self.core
        assert core is not None
        for req in core.on_timer():
            self._dispatch(req)
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
            task = self.loop.create_task(self._run(handler, req, coro, first))
        else:
            task = self.loop.create_task(self._run(handler, req))
        if task.done():  # ran to completion eagerly (Python 3.12+)
            return
        self.tasks.add(task)
        task.add_done_callback(self._on_task_done)
        if req.method == "INVITE":
            # Removed by _run when the handler ends, or by _cancel_tasks. (A
            # per-task closure as a second done callback cost ~400 bytes per
            # suspended INVITE.)
            self.cancellable[req._txn] = task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)

    def _expire(self, task: asyncio.Task[None]) -> None:
        self.expired.add(task)
        task.cancel()

    async def _every(self, seconds: float, fn) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        next_at = loop.time() + seconds
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += seconds
            try:
                await fn()
            except Exception:
                log.exception("@app.every(%s) job %s failed", seconds, fn.__name__)

    def _answer_if_silent(self, req: _core.Request) -> None:
        if not req.handled and req.method != "ACK":
            status, reason = self.app.default_reply
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

    async def _run(self, handler, req: _core.Request, coro=None, first=None) -> None:  # type: ignore[no-untyped-def]
        suspended = False
        txn = req._txn  # read now: forward() drops it from the request
        try:
            started = coro is not None
            if not started:
                coro = handler(req)
                # The first step runs inline: most handlers act without
                # awaiting and never need a deadline.
                try:
                    first = coro.send(None)
                except StopIteration:
                    pass
                else:
                    started = True
            if started:
                suspended = True
                self.suspended += 1
                task = asyncio.current_task()
                assert task is not None and self.deadlines is not None
                seconds = req.deadline or self.app.route_deadline
                self.deadlines.add(task, self.loop.time() + seconds)
                await _Resume(coro, first)
            self._answer_if_silent(req)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task in self.expired:
                self.expired.discard(task)  # type: ignore[arg-type]
                self.deadline_expired += 1
                log.warning("route deadline reached for %s (Call-ID %s)", req.method, req.call_id)
                if not req.handled and req.method != "ACK":
                    status, reason = self.app.deadline_reply
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
            if suspended:
                self.suspended -= 1
                self.deadlines.finished()  # type: ignore[union-attr]
            self.cancellable.pop(txn, None)
            req._finish()


class _Resume:
    """Continues a coroutine whose first step already ran, inside the
    awaiting task: values and exceptions (cancellation) pass straight through.

    It is its own iterator (not a generator `__await__`): one small object per
    suspended handler instead of a generator and its frame (~300 bytes each
    while suspended)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro, first) -> None:  # type: ignore[no-untyped-def]
        self.coro = coro
        self.first = first

    def __await__(self):  # type: ignore[no-untyped-def]
        return self

    def __next__(self):  # type: ignore[no-untyped-def]
        first = self.first
        if first is not _TAKEN:
            self.first = _TAKEN
            return first  # the value the first step yielded, for the task
        return self.coro.send(None)  # StopIteration(value) ends the await

    def send(self, value):  # type: ignore[no-untyped-def]
        if self.first is not _TAKEN:
            return self.__next__()
        return self.coro.send(value)

    def throw(self, typ, val=None, tb=None):  # type: ignore[no-untyped-def]
        self.first = _TAKEN
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()


_TAKEN = object()


def run(
    app: App,
    listen: list[str],
    *,
    log_level: str = "info",
    core_options: Mapping[str, Any] | None = None,
) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(app, listen, core_options))


async def _main(app: App, listen: list[str], core_options: Mapping[str, Any] | None) -> None:
    server = Server(app, listen, core_options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    await server.serve()
