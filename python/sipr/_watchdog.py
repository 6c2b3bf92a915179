"""Detects handlers that block the event loop (a sync sleep, CPU work).

A thread probes the loop while requests are in flight: it schedules a no-op
on the loop and, if that has not run after `threshold` seconds, the loop is
stalled. It then reads the loop thread's current stack to name the handler
and the Call-ID of the request it is running, and logs one line per stall.
Idle, the thread sleeps on an event: no wake-ups, no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sipr.watchdog")


class Watchdog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float = 0.2,
        is_busy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.loop = loop
        # The loop sets `busy` when it starts work; this thread clears it when
        # `is_busy()` says nothing runs, so the loop never pays for a clear.
        self.is_busy = is_busy
        self.threshold = threshold
        self.loop_thread = threading.get_ident()
        self.busy = threading.Event()
        self.stopping = False
        # The thread's pauses wait on this, so that stop() does not wait
        # out a probe interval (it joins from the loop thread).
        self._stopped = threading.Event()
        self.stalls = 0
        #: Seconds the loop took to run the last probe (0 while idle).
        self.lag = 0.0
        self._sent = self._answered = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sipr-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()
        self.busy.set()
        self._thread.join(2)

    def _pong(self) -> None:
        self._answered = time.monotonic()
        self.lag = self._answered - self._sent

    def _run(self) -> None:
        while not self.stopping:
            period = self.threshold / 2  # read each round: cfg.set may change it
            self.busy.wait()
            if self.stopping:
                return
            sent = self._sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(self._pong)
            except RuntimeError:
                return  # the loop closed
            if self._stopped.wait(self.threshold):
                return
            if self._answered < sent:
                self._report(time.monotonic() - sent)
                # Wait for the stall to end before probing again.
                while self._answered < sent and not self.stopping:
                    self._stopped.wait(period)
            else:
                self._stopped.wait(period)
            if not self.is_busy():
                self.lag = 0.0
                self.busy.clear()
                if self.is_busy():  # work started while clearing
                    self.busy.set()

    def _report(self, blocked_for: float) -> None:
        self.stalls += 1
        frame = sys._current_frames().get(self.loop_thread)
        handler, call_id = "?", "?"
        while frame is not None:
            code = frame.f_code
            in_dispatch = code.co_name in ("_run", "_dispatch")
            if in_dispatch and "req" in frame.f_locals and "handler" in frame.f_locals:
                req = frame.f_locals["req"]
                fn = frame.f_locals["handler"]
                handler = getattr(fn, "__qualname__", repr(fn))
                call_id = getattr(req, "call_id", "?")
                break
            frame = frame.f_back
        log.warning(
            "event loop blocked for %.0f ms by handler %s (Call-ID %s): "
            "use 'await anyio.to_thread.run_sync(...)' for blocking work",
            blocked_for * 1000,
            handler,
            call_id,
            extra={"call_id": None if call_id == "?" else call_id},
        )
