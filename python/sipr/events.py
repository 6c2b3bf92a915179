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

    @app.on_dialog_start              # a tracked dialog was answered
    async def up(event: sipr.DialogEvent) -> None: ...

    @app.on_dialog_end                # it ended (BYE, timeout, dlg.end, ...) or failed
    async def down(event: sipr.DialogEvent) -> None: ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
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


DialogEventKind = Literal["start", "end"]
DialogEndReason = Literal[
    "caller_bye", "callee_bye", "timeout", "keepalive", "admin", "shutdown", "failed"
]


@dataclass(frozen=True)
class DialogEvent:
    """A dialog the route tracked (`req.track_dialog()`) started or ended
    (Kamailio's `event_route[dialog:start]`, `[dialog:end]` and
    `[dialog:failed]`). "start": its first 2xx went upstream. "end": it left
    the table, once per tracked dialog, with `reason` "caller_bye",
    "callee_bye", "timeout" (lifetime over: BYE sent to both sides),
    "keepalive" (a keepalive went unanswered), "admin" (`dlg.end`,
    `app.dialogs.end()`), "shutdown" (sipr stopped with the call up), or
    "failed" (its INVITE got a final answer >= 300, or none: no "start"
    came before it). docs/dialogs.md."""

    kind: DialogEventKind
    #: The dialog's id as `sipr ctl dlg.list` shows it ("1a2b-...").
    id: str
    call_id: str
    #: The From URI and the dialled To URI of the INVITE.
    caller: str
    callee: str
    #: Why it ended (None for a start).
    reason: DialogEndReason | None
    #: The INVITE's final status (0 when a setup got none).
    code: int
    #: Unix seconds of the event.
    time: float
    #: Seconds from answer to end (0 for a start or an unanswered dialog).
    duration: float
    #: Its profiles, "name" or "name:value".
    profiles: tuple[str, ...]
    #: The `cdr` fields the route gave `track_dialog`.
    cdr: Mapping[str, str] = field(hash=False)
    #: Where the INVITE came from ("udp:127.0.0.1:5062").
    source: str = ""
    #: Where the answering branch went ("10.0.0.7:5060"); None when the app
    #: answered itself or nobody answered.
    destination: str | None = None
    from_tag: str = ""
    to_tag: str = ""


#: Dialog events taken from the core per loop turn (more: the next turn).
DIALOG_EVENTS_PER_TURN = 1000

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
        self.dialog_start: list[Hook[DialogEvent]] = []
        self.dialog_end: list[Hook[DialogEvent]] = []
        #: Hook calls made (a stat: an app without hooks keeps it at 0).
        self.dispatched = 0
        #: Requests an `on_send` hook kept from being sent.
        self.sends_refused = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: (descriptor, table) of the core whose dialog events this app takes.
        self._dialog_watch: tuple[int, Any] | None = None

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
        self._watch_dialogs(core)

    def _watch_dialogs(self, core: Any) -> None:
        """Has the core queue the dialog events this app listens to, and
        takes them as its descriptor signals; without dialog hooks the core
        queues none and nothing watches. Taking over the descriptor replaces
        the previous app's reader (a reload)."""
        table = core.dialogs()
        table.want_events(start=bool(self.dialog_start), end=bool(self.dialog_end))
        fd = table.events_fd()
        if fd is None:
            if self.dialog_start or self.dialog_end:
                log.error("dialog hooks: the kernel refused an eventfd; no dialog events")
            return
        loop = asyncio.get_running_loop()
        if self.dialog_start or self.dialog_end:
            loop.add_reader(fd, self.take_dialog_events, table)
            self._dialog_watch = (fd, table)
        else:
            loop.remove_reader(fd)

    def take_dialog_events(self, table: Any) -> int:
        """Runs the hooks of the dialog events the core queued, in order;
        returns how many it took."""
        table.clear_events_signal()
        batch = table.take_events(DIALOG_EVENTS_PER_TURN)
        for fields in batch:
            event = DialogEvent(**fields)
            hooks = self.dialog_start if event.kind == "start" else self.dialog_end
            if hooks:
                self.emit(hooks, event)
        if len(batch) == DIALOG_EVENTS_PER_TURN:  # a non-empty queue signals no more
            asyncio.get_running_loop().call_soon(self.take_dialog_events, table)
        return len(batch)

    def stop_dialog_events(self) -> None:
        """At the server's stop: dialogs still up end ("shutdown", no BYE),
        their events reach the hooks, and nothing watches any more."""
        if self._dialog_watch is None:
            return
        fd, table = self._dialog_watch
        self._dialog_watch = None
        if self.dialog_end:
            table.end_all()
        while self.take_dialog_events(table) == DIALOG_EVENTS_PER_TURN:
            pass
        table.want_events(start=False, end=False)
        asyncio.get_running_loop().remove_reader(fd)

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
    old._dialog_watch = None  # the new app's hooks take the descriptor over
    new.install(core)


def unserve(events: Events) -> None:
    if events in served:
        served.remove(events)
    events.stop_dialog_events()
