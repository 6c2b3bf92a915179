"""In-process work queues (Kamailio's mqueue): a handler hands work (a CDR
post, a notification) to background consumers and goes on routing.

Written on anyio: the queue is a bounded memory object stream, its
consumers run in the app's service task group (`sipr._lifecycle.Services`)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("sipr.queue")

Consumer = Callable[[Any], Awaitable[None]]


class QueueFull(Exception):
    """The queue is at its bound: the item was not accepted."""


class WorkQueue:
    """A bounded queue drained by `workers` consumer tasks while the app runs.

    ```python
    cdrs = app.queue("cdr", maxsize=10_000)

    @cdrs.consumer
    async def post_cdr(item): await http.post(..., json=item)

    cdrs.put_nowait({"call_id": req.call_id})   # from any handler
    ```
    """

    def __init__(self, name: str, *, maxsize: int = 10_000, workers: int = 1) -> None:
        if maxsize < 1 or workers < 1:
            raise ValueError("maxsize and workers must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self.workers = workers
        self._consumer: Consumer | None = None
        self._send: MemoryObjectSendStream[Any] | None = None
        self._receive: MemoryObjectReceiveStream[Any] | None = None
        #: Items accepted and not yet consumed (queued or being consumed).
        self._unfinished = 0
        #: Set while nothing is unfinished (made by `open`: an anyio Event
        #: belongs to the running event loop).
        self._idle: anyio.Event | None = None
        self.processed = 0
        self.failed = 0
        self.dropped = 0

    def consumer(self, fn: Consumer) -> Consumer:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"queue {self.name!r} consumer must be 'async def'")
        self._consumer = fn
        return fn

    def _stream(self) -> MemoryObjectSendStream[Any]:
        if self._send is None:
            raise RuntimeError(f"queue {self.name!r} is not running (the app is not served)")
        return self._send

    def _accepted(self) -> None:
        self._unfinished += 1
        if self._idle is None or self._idle.is_set():
            self._idle = anyio.Event()

    def put_nowait(self, item: Any) -> None:
        """Queue `item`; raises `QueueFull` at the bound (memory stays bounded)."""
        try:
            self._stream().send_nowait(item)
        except anyio.WouldBlock:
            self.dropped += 1
            raise QueueFull(f"queue {self.name!r} is full ({self.maxsize} items)") from None
        self._accepted()

    async def put(self, item: Any) -> None:
        """Queue `item`, waiting for room."""
        await self._stream().send(item)
        self._accepted()

    def qsize(self) -> int:
        if self._send is None:
            return 0
        return self._send.statistics().current_buffer_used

    def open(self) -> None:
        """Accept items from now on (the app is starting)."""
        if self._consumer is None:
            raise RuntimeError(f"queue {self.name!r} has no @consumer")
        self._send, self._receive = anyio.create_memory_object_stream[Any](self.maxsize)

    async def work(self) -> None:
        """One consumer: runs until cancelled (the app's services stop)."""
        assert self._receive is not None and self._consumer is not None
        consume = self._consumer
        async for item in self._receive:
            try:
                await consume(item)
                self.processed += 1
            except Exception:
                self.failed += 1
                log.exception("queue %s: consumer failed", self.name)
            finally:
                self._unfinished -= 1
                if self._unfinished == 0 and self._idle is not None:
                    self._idle.set()

    async def join(self, timeout: float) -> None:
        """Waits (at most `timeout` seconds) until every accepted item was consumed."""
        with anyio.move_on_after(timeout):
            while self._unfinished and self._idle is not None:
                await self._idle.wait()
        if self._unfinished:
            log.warning("queue %s: %d items left at shutdown", self.name, self.qsize())

    def close(self) -> None:
        """Refuse items from now on (the app stopped)."""
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()
        self._send = self._receive = None
        self._unfinished = 0
        self._idle = None
