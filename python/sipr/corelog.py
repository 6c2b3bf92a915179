"""The Rust core's log events (`tracing`) as Python `logging` records.

The core queues its events (bounded, rate-limited: rust/src/python/
logbridge.rs) and wakes the serving loop through an eventfd; `attach`
registers that fd with the loop, and each record goes to the logger named
after the Rust module (`sipr.core.transport.stream`, children of
`sipr.core`) with its level, message and, where the event has one, the
Call-ID: so `--log-format json` shows them like any other line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sipr import _core

log = logging.getLogger("sipr.core")


def forward() -> None:
    """Hands the queued core records to `logging` (the loop's reader callback)."""
    for level, name, message, call_id in _core.drain_logs():
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            record = logger.makeRecord(
                name, level, "rust", 0, message, (), None, extra={"call_id": call_id}
            )
            logger.handle(record)


def sync_level() -> None:
    """Lets the core build records only at the level `sipr.core` logs
    (after `--log-level` or `cfg.set log.level`): the others cost nothing."""
    _core.set_log_level(log.getEffectiveLevel())


def attach(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Starts forwarding on `loop`; returns the function that stops it
    (after forwarding what is still queued)."""
    fd = _core.log_fd()
    sync_level()
    loop.add_reader(fd, forward)

    def detach() -> None:
        loop.remove_reader(fd)
        forward()

    return detach
