"""sipr._eager: a handler's Task runs its first step at once, is its own
current task from its first line, and is listed by asyncio.all_tasks()
exactly while it is running (decisions 0048, 0066), on the stdlib loop and
on uvloop."""

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from sipr import _eager
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
        eager.close()

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
        eager.close()

    run(main())


def test_without_a_registry_every_task_registers_as_usual(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the probe answers when skipping the registration does not fit.
    monkeypatch.setattr(_eager, "_task_registry", lambda loop: None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = EagerTasks(loop)
        assert "add" not in asyncio.tasks._all_tasks.__dict__  # type: ignore[attr-defined]
        gate = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def handler() -> None:
            await gate.wait()

        await _from_callback(loop, lambda: tasks.append(eager.start(handler())))
        assert tasks[0] in asyncio.all_tasks()
        gate.set()
        await tasks[0]
        eager.close()

    asyncio.run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_everything_else_the_loop_schedules_passes_through(run: Runner) -> None:
    """Installed as the loop's call_soon and the registry's add, the starter
    passes every call it does not capture on: callbacks with arguments and a
    context, and Tasks made by other code (a handler's own too), listed
    while they run."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        eager = EagerTasks(loop)
        got: list[tuple[int, str]] = []
        context = contextvars.copy_context()
        context.run(var.set, "theirs")
        handle = loop.call_soon(lambda n: got.append((n, var.get())), 7, context=context)
        assert handle is not None and callable(handle.cancel)  # the loop's own Handle
        gate = asyncio.Event()
        inner: list[asyncio.Task[None]] = []

        async def background() -> None:
            await gate.wait()

        async def handler() -> None:
            inner.append(asyncio.create_task(background()))

        outer = asyncio.create_task(background())
        await _from_callback(loop, lambda: eager.start(handler()).result())
        assert got == [(7, "theirs")]
        assert outer in asyncio.all_tasks() and inner[0] in asyncio.all_tasks()
        gate.set()
        await asyncio.gather(outer, inner[0])
        eager.close()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_close_gives_the_loop_and_the_registry_their_own_methods_back(run: Runner) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        registry = asyncio.tasks._all_tasks  # type: ignore[attr-defined]
        first = EagerTasks(loop)
        second = EagerTasks(loop)  # over the first: closing it restores the first's
        second.close()
        assert first._registry is not None and "add" in registry.__dict__
        first.close()
        assert "call_soon" not in loop.__dict__ and "add" not in registry.__dict__
        ran: list[int] = []
        loop.call_soon(ran.append, 1)
        await asyncio.sleep(0)
        assert ran == [1]

    run(main())
