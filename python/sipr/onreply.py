"""Runs `@app.on_reply` and `relay(..., on_reply=fn)` handlers (Kamailio's
`onreply_route`): each held response goes to its handler, which may change
its headers and body, then on upstream. Responses of one transaction are
handled in the order they arrived; a handler that fails or is cancelled
lets the response go on unchanged (logged)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sipr._core import Core, RelayReply

log = logging.getLogger("sipr")

ReplyHandler = Callable[[RelayReply], Awaitable[None] | None]


class ReplyRunner:
    """Hands the core's held responses to their handlers (one per server)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app_handler: Callable[[], Any]) -> None:
        self.loop = loop
        #: Returns the app's current `@app.on_reply` (a reload may change it).
        self.app_handler = app_handler
        #: The last running handler task per server transaction.
        self.running: dict[int, asyncio.Task[None]] = {}
        self.failed = 0

    def run(self, core: Core) -> None:
        for reply, handler in core.take_replies():
            fn = handler if handler is not None else self.app_handler()
            if fn is None:
                reply._deliver()
                continue
            txn = reply._txn
            before = self.running.get(txn)
            if before is None:
                coro = self._call(fn, reply)
                if coro is None:
                    continue
                task = self.loop.create_task(self._finish(coro, reply))
            else:
                task = self.loop.create_task(self._after(before, fn, reply))
            if task.done():
                continue
            self.running[txn] = task
            task.add_done_callback(functools.partial(self._done, txn))

    def _done(self, txn: int, task: asyncio.Task[None]) -> None:
        if self.running.get(txn) is task:
            del self.running[txn]

    def _call(self, fn: ReplyHandler, reply: RelayReply) -> Awaitable[None] | None:
        """Runs a plain handler and hands the reply on; an async one's
        coroutine is returned for a task."""
        try:
            result = fn(reply)
        except Exception:
            self._failed(fn, reply)
            reply._deliver()
            return None
        if inspect.isawaitable(result):
            return result
        reply._deliver()
        return None

    async def _finish(self, coro: Awaitable[None], reply: RelayReply) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            log.info("on_reply handler cancelled (Call-ID %s)", reply.call_id)
        except Exception:
            self._failed(None, reply)
        finally:
            reply._deliver()

    async def _after(self, before: asyncio.Task[None], fn: ReplyHandler, reply: RelayReply) -> None:
        try:
            await asyncio.shield(before)
        except BaseException:
            pass
        coro = self._call(fn, reply)
        if coro is not None:
            await self._finish(coro, reply)

    def _failed(self, fn: ReplyHandler | None, reply: RelayReply) -> None:
        self.failed += 1
        log.exception(
            "on_reply handler%s failed on %d %s (Call-ID %s); the response goes on unchanged",
            f" {fn.__name__}" if fn is not None and hasattr(fn, "__name__") else "",
            reply.status,
            reply.method,
            reply.call_id,
        )
