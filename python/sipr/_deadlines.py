"""Route deadlines: a handler task still running at its deadline is
cancelled. One loop timer is armed for the earliest deadline only; finished
tasks are dropped lazily when they reach the front, and the heap is compacted
when finished entries outnumber live ones (each keeps its Task object alive:
~850 bytes per request for a whole route deadline otherwise)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class Deadlines:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[asyncio.Task[None]], None]
    ) -> None:
        self.loop = loop
        self.on_expire = on_expire
        self._heap: list[tuple[float, int, asyncio.Task[None]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        #: Entries whose task has not called `finished` yet.
        self._live = 0

    def add(self, task: asyncio.Task[None], at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), task))
        self._live += 1
        if at < self._armed_at:
            self._arm(at)

    def finished(self) -> None:
        """A task given to `add` is ending (expired or not)."""
        self._live -= 1
        heap = self._heap
        if len(heap) > 2 * self._live + 1024:
            self._heap = [e for e in heap if not e[2].done()]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        self._timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = float("inf")
        now = self.loop.time()
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, task = heapq.heappop(heap)
            if not task.done():
                self.on_expire(task)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()
        self._live = 0
