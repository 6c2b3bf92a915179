"""The asyncio event loop `sipr run` serves on (docs/decisions/0060).

uvloop's loop pass is C (libuv) where the standard library's is Python: a
loop wake-up is most of what a datagram costs on the Python side, so this
choice is ~20 % of the CPU of a proxied call at 500-1000 cps, and most of
what a second worker process adds per call (each worker wakes for half the
datagrams). The standard loop stays one setting away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `choice`; None means the standard library's loop.
    `auto` takes uvloop when it is installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                "event loop uvloop is not installed: pip install uvloop (or --event-loop asyncio)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(coro: Coroutine[Any, Any, T], choice: str) -> T:
    """`asyncio.run(coro)` on the loop `choice` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)
