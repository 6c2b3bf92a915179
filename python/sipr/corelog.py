"""The Rust core's log events (`tracing`) as Python `logging` records.

The core queues its events (bounded, rate-limited: rust/src/python/
logbridge.rs) and wakes the serving loop through an eventfd; `attach`
registers that fd with the loop, and each record goes to the logger named
after the Rust module (`sipr.core.transport.stream`, children of
`sipr.core`) with its level, message and, where the event has one, the
Call-ID: so `--log-format json` shows them like any other line. Records the
rate limit suppressed are counted in one warning a second while it lasts
(docs/decisions/0027-core-logs-into-python-logging.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sipr import _core

log = logging.getLogger("sipr.core")

#: While records are suppressed, their count is collected this often.
SUPPRESSED_EVERY = 1.0


class _Forwarder:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.collecting: asyncio.TimerHandle | None = None

    def forward(self) -> None:
        """Hands the queued core records to `logging` (the loop's reader callback)."""
        records, suppressed = _core.drain_logs()
        for level, name, message, call_id in records:
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                record = logger.makeRecord(
                    name, level, "rust", 0, message, (), None, extra={"call_id": call_id}
                )
                logger.handle(record)
        if suppressed:
            log.warning(
                "%d core log record(s) suppressed (more than %d a second)",
                suppressed,
                _core.log_rate_limit(),
            )
            if self.collecting is None:
                self.collecting = self.loop.call_later(SUPPRESSED_EVERY, self._collect)

    def _collect(self) -> None:
        self.collecting = None
        self.forward()

    def close(self) -> None:
        if self.collecting is not None:
            self.collecting.cancel()
            self.collecting = None


def sync_level() -> None:
    """Lets the core build records only at the level `sipr.core` logs
    (after `--log-level` or `cfg.set log.level`): the others cost nothing."""
    _core.set_log_level(log.getEffectiveLevel())


def attach(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Starts forwarding on `loop`; returns the function that stops it
    (after forwarding what is still queued)."""
    fd = _core.log_fd()
    sync_level()
    forwarder = _Forwarder(loop)
    loop.add_reader(fd, forwarder.forward)

    def detach() -> None:
        loop.remove_reader(fd)
        forwarder.close()
        forwarder.forward()
        forwarder.close()

    return detach
