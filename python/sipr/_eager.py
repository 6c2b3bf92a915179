"""A real asyncio Task whose first step runs at once, on Python 3.11
(decision 0048; 3.12+ has `asyncio.eager_task_factory` for this).

`create_task` schedules a Task's first step with `loop.call_soon`: one loop
pass later, and a handler that never awaits then needs another pass for the
task's done callbacks. Here the Task's constructor is handed a `call_soon`
that keeps the step instead of scheduling it, and the step runs at once in
the task's own context, with the task entered as the current one: the
handler is inside its Task from its first line (`current_task()`,
`asyncio.timeout()`, anyio cancel scopes and CANCEL work as before), and one
that finishes without awaiting is done before `start` returns."""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

#: Every handler Task's name. Without one, the Task formats "Task-<n>" for
#: each request (~1.4k instructions on 3.11); nothing reads it.
TASK_NAME = "sipr-handler"


class EagerTasks:
    """Starts Tasks on `loop` with their first step run inline.

    Only for a loop whose instance attributes shadow its methods (the
    standard library loops); `usable` says whether this one does."""

    __slots__ = ("_context", "_registry", "_step", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._step: Callable[[], Any] | None = None
        self._context: contextvars.Context | None = None
        self._registry = _task_registry(loop)

    @staticmethod
    def usable(loop: asyncio.AbstractEventLoop) -> bool:
        return hasattr(loop, "__dict__") and not hasattr(asyncio, "eager_task_factory")

    def _keep_step(
        self, callback: Callable[[], Any], *args: Any, context: contextvars.Context | None = None
    ) -> None:
        self._step = callback
        self._context = context

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        loop = self.loop
        registry = self._registry
        loop.call_soon = self._keep_step  # type: ignore[method-assign,assignment]
        if registry is not None:
            registry.add = _unregistered  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.Task(coro, loop=loop, name=TASK_NAME)
        finally:
            del loop.call_soon
            if registry is not None:
                del registry.add
        step, context = self._step, self._context
        self._step = self._context = None
        assert step is not None and context is not None
        context.run(step)
        if registry is not None and not task.done():
            registry.add(task)  # suspended: asyncio.all_tasks() lists it
        return task


#: Takes the Task the constructor registers and does nothing with it: C, so
#: no Python frame per request.
_unregistered = id


def _task_registry(loop: asyncio.AbstractEventLoop) -> weakref.WeakSet[Any] | None:
    """The set `asyncio.all_tasks()` reads, when a Task's constructor adds
    itself to it through an `add` that an instance attribute can replace;
    else None (then every Task registers as usual).

    3.11's constructor adds each Task to that WeakSet in Python (a weak
    reference, and a callback when the Task is freed: ~3k instructions per
    request). A handler done in its first step is never listed by
    `all_tasks()` (it filters done tasks out), so only one that suspends is
    added, after its first step."""
    registry = getattr(asyncio.tasks, "_all_tasks", None)
    if not isinstance(registry, weakref.WeakSet):
        return None

    async def probe() -> None:
        await asyncio.sleep(0)

    def created(skip: bool) -> bool:
        coro = probe()
        loop.call_soon = _ignore  # type: ignore[method-assign,assignment]
        if skip:
            registry.add = _unregistered  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.Task(coro, loop=loop, name=TASK_NAME)
        finally:
            del loop.call_soon
            if skip:
                del registry.add
        listed = task in registry
        registry.discard(task)
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # never to run
        coro.close()
        return listed

    try:
        return registry if created(skip=False) and not created(skip=True) else None
    except Exception:  # a loop or asyncio build this does not fit: keep the default
        return None


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
