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

    @app.on_send                      # synchronous: it decides as the request leaves
    def guard(event: sipr.SendEvent) -> bool | None:
        return event.host not in BLOCKED   # False: not sent (403 for the branch)

    @app.on_timeout
    async def timed_out(event: sipr.TimeoutEvent) -> None: ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

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


@dataclass(frozen=True)
class SendEvent:
    """A request about to leave (Kamailio's `onsend_route`): a stateful
    branch, a failover to the next destination, a stateless forward, an
    in-dialog request the core routes itself."""

    method: str
    #: The Request-URI it carries on this branch.
    uri: str
    #: Where it goes, after DNS: "udp", "tcp", "tls", "ws" or "wss".
    transport: str
    host: str
    port: int
    call_id: str

    @property
    def destination(self) -> str:
        """Where it goes as "transport:host:port" ("udp:10.0.0.7:5060")."""
        return _destination(self.transport, self.host, self.port)


TimeoutKind = Literal["no_response", "timer_c", "relay_timeout"]


@dataclass(frozen=True)
class TimeoutEvent:
    """A relayed branch ended without a final answer in time (Kamailio's
    `t_branch_timeout()` in a failure route): "no_response" (Timer B/F, or
    the failover timeout of a destination with alternatives), "timer_c"
    (a provisional, then nothing: RFC 3261 §16.8), "relay_timeout" (the
    `relay(..., timeout=)` of the handler). The branch then counts as 408."""

    kind: TimeoutKind
    method: str
    uri: str
    transport: str
    host: str
    port: int
    call_id: str

    @property
    def destination(self) -> str:
        return _destination(self.transport, self.host, self.port)


E = TypeVar("E")
Hook = Callable[[E], Awaitable[None]]
#: `@app.on_send`: returns False to keep the request from being sent.
SendHook = Callable[[SendEvent], "bool | None"]


class Events:
    """The hooks of one app, by event, and what calling them costs."""

    def __init__(self) -> None:
        self.registration: list[Hook[RegistrationEvent]] = []
        self.reload: list[Hook[ReloadEvent]] = []
        self.send: list[SendHook] = []
        self.timeout: list[Hook[TimeoutEvent]] = []
        #: Hook calls made (a stat: an app without hooks keeps it at 0).
        self.dispatched = 0
        #: Requests an `on_send` hook kept from being sent.
        self.sends_refused = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, hooks: list[Hook[E]], event: E) -> None:
        """Runs each hook in its own task; a failing hook is logged."""
        loop = asyncio.get_running_loop()
        for hook in hooks:
            self.dispatched += 1
            task = loop.create_task(_run(hook, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def check_send(
        self, method: str, uri: str, transport: str, host: str, port: int, call_id: str
    ) -> bool:
        """Called by the core as a request leaves (only while `send` hooks
        exist): False keeps it from being sent. A failing hook refuses too: a
        guard that cannot decide lets nothing through. The hooks run inside
        the core's call: they must answer at once, from what they hold (no
        I/O, no call back into sipr such as `app.stats()`)."""
        event = SendEvent(method, uri, transport, host, port, call_id)
        for hook in self.send:
            self.dispatched += 1
            try:
                allowed = hook(event) is not False
            except Exception:
                log.exception("on_send hook %s failed on %r", _name(hook), event)
                allowed = False
            if not allowed:
                self.sends_refused += 1
                log.info("on_send: %s to %s refused", method, event.destination)
                return False
        return True

    def core_timeout(
        self,
        kind: str,
        method: str,
        uri: str,
        transport: str,
        host: str,
        port: int,
        call_id: str,
    ) -> None:
        """Called by the core when a branch times out (only while `timeout`
        hooks exist). The hooks start after the core call returns: the core
        is busy until then (an eager task would run its first step here)."""
        event = TimeoutEvent(cast(TimeoutKind, kind), method, uri, transport, host, port, call_id)
        asyncio.get_running_loop().call_soon(self.emit, self.timeout, event)

    def install(self, core: Any) -> None:
        """Gives `core` the hooks it calls itself (`on_send`, `on_timeout`),
        or takes them back: none of them, no call (`Core.set_event_hooks`)."""
        core.set_event_hooks(
            on_send=self.check_send if self.send else None,
            on_timeout=self.core_timeout if self.timeout else None,
        )

    async def settle(self) -> None:
        """Waits for the hooks running now (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _destination(transport: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{transport}:{shown}:{port}"


def _name(hook: object) -> str:
    return str(getattr(hook, "__name__", hook))


async def _run(hook: Hook[E], event: E) -> None:
    try:
        await hook(event)
    except Exception:
        log.exception("event hook %s failed on %r", _name(hook), event)


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


def serve(core: Any, events: Events) -> None:
    """A server starts serving the app whose hooks are `events`."""
    served.append(events)
    events.install(core)


def swap(core: Any, old: Events, new: Events) -> None:
    """A reload replaced the served app: its hooks replace the old ones."""
    served[served.index(old)] = new
    new.install(core)


def unserve(events: Events) -> None:
    if events in served:
        served.remove(events)
