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
import dataclasses
import logging
from dataclasses import dataclass, field

import anyio

from sipr._core import Core
from sipr._protocols import AppLike, Job, Running, ServerView
from sipr.loader import AppLoadError, ReloadError, describe, load_app

log = logging.getLogger("sipr")

#: Nothing in flight and no new transaction for this long ends a drain early:
#: the ACK and BYE that follow a call's answer still get through.
DRAIN_QUIET = 0.5
_POLL = 0.05


def _changed_settings(old: AppLike, new: AppLike) -> list[str]:
    """App settings a reload does not take from the new script (they are
    runtime settings, changed with cfg.set, or fixed at start) that differ."""
    changed = []
    for attr in ("core_settings", "timer_settings", "route_settings"):
        before, after = getattr(old, attr), getattr(new, attr)
        for f in dataclasses.fields(before):
            if getattr(before, f.name) != getattr(after, f.name):
                changed.append(f.name)
    return changed


class Services:
    """An app's background work, on anyio: its `@app.every` jobs and its
    queues' consumers run in two task groups hosted by one task while the
    app is served; `start` runs its `on_startup` hooks first, `stop` lets
    the queues empty (bounded), then runs its `on_shutdown` hooks."""

    def __init__(self, app: AppLike) -> None:
        self.app = app
        self._host: asyncio.Task[None] | None = None
        self._jobs: anyio.CancelScope | None = None
        self._consumers: anyio.CancelScope | None = None

    async def start(self) -> None:
        app = self.app
        for fn in app.startup:
            await fn()
        for q in app.queues.values():
            q.open()
        ready = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._run(ready), name="sipr-services")
        await ready.wait()

    async def _run(self, ready: anyio.Event) -> None:
        async with anyio.create_task_group() as consumers:
            self._consumers = consumers.cancel_scope
            for q in self.app.queues.values():
                for _ in range(q.workers):
                    consumers.start_soon(q.work, name=f"sipr-queue-{q.name}")
            async with anyio.create_task_group() as jobs:
                self._jobs = jobs.cancel_scope
                for seconds, fn in self.app.periodic:
                    jobs.start_soon(_every, seconds, fn)
                ready.set()

    async def stop(self, queue_timeout: float) -> None:
        """Stops the jobs, gives the queues `queue_timeout` seconds to empty,
        stops the consumers and runs the `on_shutdown` hooks."""
        if self._jobs is not None:
            self._jobs.cancel()
        for q in self.app.queues.values():
            await q.join(queue_timeout)
        if self._consumers is not None:
            self._consumers.cancel()
        if self._host is not None:
            await asyncio.gather(self._host, return_exceptions=True)
        for q in self.app.queues.values():
            q.close()
        for fn in self.app.shutdown:
            try:
                await fn()
            except Exception:
                log.exception("on_shutdown hook %s failed", getattr(fn, "__name__", fn))


async def _every(seconds: float, fn: Job) -> None:
    """Runs `fn` every `seconds` (`@app.every`); a failure is logged."""
    next_at = anyio.current_time() + seconds
    while True:
        await anyio.sleep(max(0.0, next_at - anyio.current_time()))
        next_at += seconds
        try:
            await fn()
        except Exception:
            log.exception("@app.every(%s) job %s failed", seconds, getattr(fn, "__name__", fn))


@dataclass
class _Retiring:
    """An app replaced by a reload, waiting for its handler tasks to end."""

    app: AppLike
    services: Running
    handlers: set[asyncio.Task[None]]
    waiter: asyncio.Task[None] | None = field(default=None)


async def reload(server: ServerView) -> dict[str, object]:
    source = server.source
    if source is None:
        message = "no route script to reload: the app was not started by `sipr run`"
        log.error("reload refused: %s", message)
        raise ReloadError(message)
    old = server.app
    try:
        new = load_app(source, type(old), fresh=True)
    except AppLoadError as e:
        log.error("reload refused, the running app stays: %s", e)
        raise ReloadError(str(e)) from None
    changed = _changed_settings(old, new)
    if changed:
        log.warning(
            "reload: App(...) settings changed in %s are not applied (use cfg.set or restart): %s",
            source,
            ", ".join(changed),
        )
    try:
        await server.security.reload(new)
    except ValueError as e:
        message = f"{source}: security settings: {e}"
        log.error("reload refused, the running app stays: %s", message)
        raise ReloadError(message) from None
    services = Services(new)
    try:
        await services.start()
    except Exception as e:
        message = f"{source}: on_startup failed: {describe(e)}"
        log.error("reload refused, the running app stays: %s", message)
        raise ReloadError(message) from None
    retiring = _Retiring(old, server.services, set(server.tasks))
    new._core, new._server = server.core, server
    server.services = services
    server.app = new
    if server.core is not None:
        server.core.set_in_dialog_to_app(new.in_dialog_handler is not None)
        server.core.set_force_rport(new.core_settings.force_rport)
    server.reloads += 1
    retiring.waiter = server.loop.create_task(_retire(server, retiring))
    server.retiring.append(retiring)
    log.info(
        "reloaded %s: new requests use the new code, %d running handler(s) finish on the old",
        source,
        len(retiring.handlers),
    )
    return {"source": source, "reloads": server.reloads, "on_old_code": len(retiring.handlers)}


async def _retire(server: ServerView, old: _Retiring) -> None:
    if old.handlers:
        await asyncio.wait(old.handlers)
    server.retiring.remove(old)
    await old.services.stop(max(server.drain_timeout, 0.5))
    old.app._server = old.app._core = None


async def retire_all(server: ServerView) -> None:
    """At shutdown: stop the services of apps replaced by reloads at once."""
    for old in list(server.retiring):
        if old.waiter is not None:
            old.waiter.cancel()
        await old.services.stop(0.0)
    server.retiring.clear()


def _activity(core: Core) -> int:
    """Grows with every transaction created and response received: in-dialog
    traffic during a drain. (Refused requests create no transaction.)"""
    stats = dict(core.stats())
    return sum(
        stats.get(k, 0)
        for k in ("transactions.server_total", "transactions.client_total", "responses_in")
    )


async def drain(server: ServerView) -> None:
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
