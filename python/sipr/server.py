"""The serving loop: registers the core's sockets with asyncio, runs one task
per request, and shuts down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from sipr import _core
from sipr.app import App

log = logging.getLogger("sipr")

#: How long SIGTERM waits for in-flight handlers before exiting anyway.
DRAIN_SECONDS = 5.0


class Server:
    def __init__(self, app: App, listen: list[str]) -> None:
        if app.route_handler is None:
            raise RuntimeError("the app has no @app.route handler")
        self.app = app
        self.listen = listen
        self.core: _core.Core | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Handler tasks of requests a CANCEL can end, by transaction id.
        self.cancellable: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.core = core = _core.Core(
            self.listen,
            max_pending=self.app.max_pending,
            retry_after=self.app.retry_after,
            in_dialog_to_app=self.app.in_dialog_handler is not None,
            record_route=self.app.record_route,
        )
        for fn in self.app.startup:
            await fn()
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
            for fn in self.app.shutdown:
                await fn()
            core.stop()

    def stop(self) -> None:
        self.stopping.set()

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
        task = asyncio.get_running_loop().create_task(self._run(handler, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if req.method == "INVITE":
            txn = req._txn
            self.cancellable[txn] = task
            task.add_done_callback(lambda _t: self.cancellable.pop(txn, None))

    async def _run(self, handler, req: _core.Request) -> None:  # type: ignore[no-untyped-def]
        try:
            await handler(req)
            if not req.handled and req.method != "ACK":
                status, reason = self.app.default_reply
                log.info(
                    "no action for %s (Call-ID %s): answering %d", req.method, req.call_id, status
                )
                req.reply(status, reason)
        except asyncio.CancelledError:
            log.info("handler cancelled: %s (Call-ID %s)", req.method, req.call_id)
            raise
        except Exception:
            log.exception("route handler failed (Call-ID %s)", req.call_id)
            if not req.handled and req.method != "ACK":
                req.reply(500)
        finally:
            req._finish()


def run(app: App, listen: list[str], *, log_level: str = "info") -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(app, listen))


async def _main(app: App, listen: list[str]) -> None:
    server = Server(app, listen)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()
