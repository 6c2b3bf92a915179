"""The server's life cycle beyond serving requests: starting and stopping an
app's services, reloading the route script, and draining on shutdown.

Reload (docs/decisions/0008-reload.md): the script runs again as a new
module; its app's services start, new requests go to its handlers, and the
previous app is retired once the handler tasks it was running have ended
(its queues drained, its `@app.every` jobs cancelled, its `on_shutdown` run).

Drain: the core refuses new transactions (503 + Retry-After) while requests
inside dialogs, CANCELs and responses go on; the server exits once nothing
has been in flight for `DRAIN_QUIET` seconds, or at the drain timeout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipr.app import App
from sipr.logs import JsonFormatter
from sipr.runtime import AppLoadError, ReloadError, describe, load_app

if TYPE_CHECKING:
    from sipr.server import Server

log = logging.getLogger("sipr")

#: Nothing in flight and no new transaction for this long ends a drain early:
#: the ACK and BYE that follow a call's answer still get through.
DRAIN_QUIET = 0.5
_POLL = 0.05

#: `--log-format json`: the startup lines are JSON too.
json_banner = False

#: App settings a reload does not take from the new script (they are runtime
#: settings, changed with cfg.set, or fixed at start).
_FIXED_SETTINGS = (
    "record_route",
    "default_reply",
    "max_pending",
    "retry_after",
    "timers",
    "route_deadline",
    "deadline_reply",
    "stall_threshold",
    "eager",
    "udp_reader",
)


def announce(text: str) -> None:
    """A startup line on stderr (what tests and operators wait for)."""
    if json_banner:
        record = logging.LogRecord("sipr", logging.INFO, __file__, 0, text, None, None)
        text = JsonFormatter().format(record)
    print(text, file=sys.stderr, flush=True)


Every = Callable[[float, Callable[[], Awaitable[None]]], Awaitable[None]]


async def start_services(app: App, every: Every) -> list[asyncio.Task[None]]:
    """Runs the app's on_startup hooks, starts its queues and its
    `@app.every` jobs; returns the job tasks."""
    for fn in app.startup:
        await fn()
    for q in app.queues.values():
        q.start()
    loop = asyncio.get_running_loop()
    return [loop.create_task(every(seconds, fn)) for seconds, fn in app.periodic]


async def stop_services(app: App, jobs: list[asyncio.Task[None]], queue_timeout: float) -> None:
    for t in jobs:
        t.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    for q in app.queues.values():
        await q.stop(queue_timeout)
    for fn in app.shutdown:
        try:
            await fn()
        except Exception:
            log.exception("on_shutdown hook %s failed", getattr(fn, "__name__", fn))


@dataclass
class _Retiring:
    """An app replaced by a reload, waiting for its handler tasks to end."""

    app: App
    jobs: list[asyncio.Task[None]]
    handlers: set[asyncio.Task[None]]
    waiter: asyncio.Task[None] | None = field(default=None)


async def reload(server: Server) -> dict[str, Any]:
    source = server.source
    if source is None:
        message = "no route script to reload: the app was not started by `sipr run`"
        log.error("reload refused: %s", message)
        raise ReloadError(message)
    old = server.app
    try:
        new = load_app(source, fresh=True)
    except AppLoadError as e:
        log.error("reload refused, the running app stays: %s", e)
        raise ReloadError(str(e)) from None
    changed = [name for name in _FIXED_SETTINGS if getattr(new, name) != getattr(old, name)]
    if changed:
        log.warning(
            "reload: App(...) settings changed in %s are not applied (use cfg.set or restart): %s",
            source,
            ", ".join(changed),
        )
    try:
        jobs = await start_services(new, server._every)
    except Exception as e:
        message = f"{source}: on_startup failed: {describe(e)}"
        log.error("reload refused, the running app stays: %s", message)
        raise ReloadError(message) from None
    retiring = _Retiring(old, server.side_tasks, set(server.tasks))
    new._core, new._server = server.core, server
    server.side_tasks = jobs
    server.app = new
    if server.core is not None:
        server.core.set_in_dialog_to_app(new.in_dialog_handler is not None)
        server.core.set_on_reply(new.on_reply_handler is not None)
    server.reloads += 1
    retiring.waiter = server.loop.create_task(_retire(server, retiring))
    server.retiring.append(retiring)
    log.info(
        "reloaded %s: new requests use the new code, %d running handler(s) finish on the old",
        source,
        len(retiring.handlers),
    )
    return {"source": source, "reloads": server.reloads, "on_old_code": len(retiring.handlers)}


async def _retire(server: Server, old: _Retiring) -> None:
    if old.handlers:
        await asyncio.wait(old.handlers)
    server.retiring.remove(old)
    await stop_services(old.app, old.jobs, max(server.drain_timeout, 0.5))
    old.app._server = old.app._core = None


async def retire_all(server: Server) -> None:
    """At shutdown: stop the services of apps replaced by reloads at once."""
    for old in list(server.retiring):
        if old.waiter is not None:
            old.waiter.cancel()
        await stop_services(old.app, old.jobs, 0.0)
    server.retiring.clear()


def _activity(core: Any) -> int:
    """Grows with every transaction created and response received: in-dialog
    traffic during a drain. (Refused requests create no transaction.)"""
    stats = dict(core.stats())
    return sum(
        stats.get(k, 0)
        for k in ("transactions.server_total", "transactions.client_total", "responses_in")
    )


async def drain(server: Server) -> None:
    """Refuses new transactions and waits (bounded) for the in-flight ones."""
    core = server.core
    assert core is not None
    core.start_drain()
    loop = server.loop
    started = loop.time()
    deadline = server.drain_deadline = started + server.drain_timeout

    def in_flight() -> tuple[int, int, int]:
        servers, clients = core.open_transactions()
        return len(server.tasks) + server.inline, servers, clients

    handlers, servers, clients = in_flight()
    log.info(
        "shutting down: new transactions get 503; waiting up to %gs for %d handler(s), "
        "%d server and %d client transaction(s)",
        server.drain_timeout,
        handlers,
        servers,
        clients,
    )
    activity = _activity(core)
    quiet_since: float | None = None
    while not server.aborted.is_set():
        now = loop.time()
        # Queued app jobs (CDRs of finished calls...) are in flight too.
        queued = sum(q.qsize() for q in server.app.queues.values())
        busy = any(in_flight()) or core.pending > 0 or queued > 0
        now_activity = _activity(core)
        if busy or now_activity != activity:
            quiet_since, activity = None, now_activity
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= min(DRAIN_QUIET, server.drain_timeout):
            log.info("drained in %.1fs", now - started)
            return
        if now >= deadline:
            handlers, servers, clients = in_flight()
            log.warning(
                "drain timeout (%gs): exiting with %d handler(s), %d server and %d client "
                "transaction(s) in flight",
                server.drain_timeout,
                handlers,
                servers,
                clients,
            )
            return
        try:
            await asyncio.wait_for(server.aborted.wait(), _POLL)
        except TimeoutError:
            pass
