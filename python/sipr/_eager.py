"""A real asyncio Task whose first step runs at once, on Python 3.11
(decision 0048; 3.12+ has `asyncio.eager_task_factory` for this).

`create_task` schedules a Task's first step with `loop.call_soon`: one loop
pass later, and a handler that never awaits then needs another pass for the
task's done callbacks. Here the Task's constructor meets a `call_soon` that
keeps the step instead of scheduling it (`sipr._core.TaskStarter`), and the
step runs at once in the task's own context, with
the task entered as the current one: the
handler is inside its Task from its first line (`current_task()`,
`asyncio.timeout()`, anyio cancel scopes and CANCEL work as before), and one
that finishes without awaiting is done before `start` returns."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from sipr import _core

#: Every handler Task's name. Without one, the Task formats "Task-<n>" for
#: each request (~1.4k instructions on 3.11); nothing reads it.
TASK_NAME = "sipr-handler"


class EagerTasks:
    """Starts Tasks on `loop` with their first step run inline.

    A `sipr._core.TaskStarter` does it (decision 0067); when
    `_task_registry` finds the registry replaceable, the starter is
    installed as its `add` (it passes other Tasks on), and `close` puts the
    registry's own back. Only for a loop whose instance attributes shadow
    its methods (the standard library loops); `usable` says whether this one
    does."""

    __slots__ = ("_hook", "_registry", "_registry_before", "loop", "start")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._registry = _task_registry(loop)
        registry = self._registry
        starter = _core.TaskStarter(
            loop, registry.add if registry is not None else None, asyncio.Task, TASK_NAME
        )
        #: The registry's `add` we installed, and the instance attribute it
        #: replaced (None: the set's own method showed through).
        self._hook: Any = None
        self._registry_before: Any = None
        if registry is not None:
            self._registry_before = registry.__dict__.get("add")
            self._hook = registry.add = starter.add  # type: ignore[method-assign,assignment]
        self.start: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] = starter.start

    def close(self) -> None:
        """Puts the registry's own `add` back (the one in place before, if
        another starter's)."""
        registry = self._registry
        if registry is not None and self._hook is not None:
            if registry.__dict__.get("add") is self._hook:  # else replaced since: not ours
                _put_back(registry, "add", self._registry_before)
            self._hook = None

    @staticmethod
    def usable(loop: asyncio.AbstractEventLoop) -> bool:
        return hasattr(loop, "__dict__") and not hasattr(asyncio, "eager_task_factory")


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
        # Another starter may be installed: its hooks are put back after.
        before = loop.__dict__.get("call_soon"), registry.__dict__.get("add")
        loop.call_soon = _ignore  # type: ignore[method-assign,assignment]
        if skip:
            registry.add = _unregistered  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.Task(coro, loop=loop, name=TASK_NAME)
        finally:
            _put_back(loop, "call_soon", before[0])
            if skip:
                _put_back(registry, "add", before[1])
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


def _put_back(target: Any, name: str, before: Any) -> None:
    """Gives `target` back what its instance attribute `name` held (None:
    no instance attribute, the class's method shows through)."""
    if before is None:
        delattr(target, name)
    else:
        setattr(target, name, before)
