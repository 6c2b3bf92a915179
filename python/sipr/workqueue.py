"""In-process work queues (Kamailio's mqueue): a handler hands work (a CDR
post, a notification) to background consumers and goes on routing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("sipr.queue")


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
        self._consumer: Callable[[Any], Awaitable[None]] | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0
        self.failed = 0
        self.dropped = 0

    def consumer(self, fn: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError(f"queue {self.name!r} consumer must be 'async def'")
        self._consumer = fn
        return fn

    def put_nowait(self, item: Any) -> None:
        """Queue `item`; raises `QueueFull` at the bound (memory stays bounded)."""
        if self._queue is None:
            raise RuntimeError(f"queue {self.name!r} is not running (the app is not served)")
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            raise QueueFull(f"queue {self.name!r} is full ({self.maxsize} items)") from None

    async def put(self, item: Any) -> None:
        """Queue `item`, waiting for room."""
        if self._queue is None:
            raise RuntimeError(f"queue {self.name!r} is not running (the app is not served)")
        await self._queue.put(item)

    def qsize(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        if self._consumer is None:
            raise RuntimeError(f"queue {self.name!r} has no @consumer")
        self._queue = asyncio.Queue(self.maxsize)
        self._tasks = [
            asyncio.get_running_loop().create_task(self._work(), name=f"sipr-queue-{self.name}")
            for _ in range(self.workers)
        ]

    async def stop(self, timeout: float) -> None:
        """Let consumers finish what is queued (bounded by `timeout`), then stop."""
        if self._queue is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("queue %s: %d items left at shutdown", self.name, self._queue.qsize())
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queue = None

    async def _work(self) -> None:
        assert self._queue is not None and self._consumer is not None
        queue, consume = self._queue, self._consumer
        while True:
            item = await queue.get()
            try:
                await consume(item)
                self.processed += 1
            except Exception:
                self.failed += 1
                log.exception("queue %s: consumer failed", self.name)
            finally:
                queue.task_done()
