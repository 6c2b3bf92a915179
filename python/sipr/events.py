"""Event hooks (Kamailio's `event_route`): an app registers async functions
for what happens outside its route handlers, and the place where it happens
calls them, only when some are registered: an app without hooks pays one
truth test of an empty list per event, and no Python call
(`events.dispatched` in `app.stats()` counts the calls). docs/decisions/0046.

    @app.on_registration
    async def contact_changed(event: sipr.RegistrationEvent) -> None:
        log.info("%s %s %s", event.kind, event.aor, event.contact)

    @app.on_reload
    async def reloaded(event: sipr.ReloadEvent) -> None: ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

log = logging.getLogger("sipr")

RegistrationKind = Literal["added", "refreshed", "removed", "expired"]


@dataclass(frozen=True)
class RegistrationEvent:
    """A contact of an address-of-record changed (Kamailio's usrloc
    callbacks and `event_route[usrloc:contact-expired]`)."""

    kind: RegistrationKind
    aor: str
    contact: str
    #: Seconds the binding still has (0 once removed or expired).
    expires: int
    #: Where the REGISTER came from ("udp:127.0.0.1:5062"), None for an expiry.
    source: str | None = None


@dataclass(frozen=True)
class ReloadEvent:
    """The route script was imported again (`sipr ctl reload`, SIGHUP);
    delivered to the new app's hooks. A refused reload reaches the running
    app's hooks with `ok` False and the reason."""

    ok: bool
    source: str | None
    error: str | None = None


E = TypeVar("E")
Hook = Callable[[E], Awaitable[None]]


class Events:
    """The hooks of one app, by event, and what calling them costs."""

    def __init__(self) -> None:
        self.registration: list[Hook[RegistrationEvent]] = []
        self.reload: list[Hook[ReloadEvent]] = []
        #: Hook calls made (a stat: an app without hooks keeps it at 0).
        self.dispatched = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, hooks: list[Hook[E]], event: E) -> None:
        """Runs each hook in its own task; a failing hook is logged."""
        loop = asyncio.get_running_loop()
        for hook in hooks:
            self.dispatched += 1
            task = loop.create_task(_run(hook, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Waits for the hooks running now (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _run(hook: Hook[E], event: E) -> None:
    try:
        await hook(event)
    except Exception:
        log.exception("event hook %s failed on %r", getattr(hook, "__name__", hook), event)


#: The hooks of the apps this process serves now (a registrar is not tied to
#: one app: each served app with registration hooks hears its changes).
served: list[Events] = []


def registration_hooks() -> bool:
    """True when some served app has registration hooks (the registrar only
    then computes what changed)."""
    return any(e.registration for e in served)


def emit_registration(event: RegistrationEvent) -> None:
    for events in served:
        if events.registration:
            events.emit(events.registration, event)
