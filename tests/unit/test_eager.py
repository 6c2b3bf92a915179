"""sipr._eager: a handler's Task runs its first step at once, is its own
current task from its first line, and is listed by asyncio.all_tasks()
exactly while it is running (decisions 0048, 0066), on the stdlib loop and
on uvloop."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from sipr._eager import EagerTasks

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: list[Runner] = [asyncio.run, uvloop.run]


def _from_callback(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> asyncio.Future[None]:
    """Runs `fn` as the server's dispatch does: from a loop callback, no task current."""
    done = loop.create_future()

    def call() -> None:
        try:
            fn()
        except BaseException as e:  # reported to the awaiting test
            done.set_exception(e)
        else:
            done.set_result(None)

    loop.call_soon(call)
    return done


@pytest.mark.parametrize("run", RUNNERS)
def test_a_quick_handler_is_done_in_its_own_task_and_never_listed(run: Runner) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = EagerTasks(loop)
        assert eager._registry is not None  # this Python and loop allow the skip
        seen: dict[str, Any] = {}

        async def handler() -> None:
            seen["current"] = asyncio.current_task()
            seen["listed"] = seen["current"] in asyncio.all_tasks()

        def dispatch() -> None:
            task = eager.start(handler())
            seen["task"] = task
            seen["done"] = task.done()
            seen["listed_after"] = task in asyncio.all_tasks()

        await _from_callback(loop, dispatch)
        assert seen["done"] and seen["current"] is seen["task"]
        # all_tasks() never shows a done Task: skipping its registration is invisible.
        assert not seen["listed"] and not seen["listed_after"]

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_a_suspended_handler_is_listed_until_it_ends(run: Runner) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = EagerTasks(loop)
        gate = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def handler() -> None:
            async with asyncio.timeout(5):  # needs a current task from line one
                await gate.wait()

        await _from_callback(loop, lambda: tasks.append(eager.start(handler())))
        task = tasks[0]
        assert not task.done() and task in asyncio.all_tasks()
        gate.set()
        await task
        assert task not in asyncio.all_tasks()

    run(main())


def test_without_a_registry_every_task_registers_as_usual() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = EagerTasks(loop)
        eager._registry = None  # what the probe leaves when the skip does not fit
        gate = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def handler() -> None:
            await gate.wait()

        await _from_callback(loop, lambda: tasks.append(eager.start(handler())))
        assert tasks[0] in asyncio.all_tasks()
        gate.set()
        await tasks[0]

    asyncio.run(main())
