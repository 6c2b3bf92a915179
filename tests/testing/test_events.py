"""Event hooks: registration (added, refreshed, removed, expired) and
reload fire; an app without hooks makes no hook call and keeps REGISTERs
in the core."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sipr
from sipr.events import RegistrationEvent, ReloadEvent
from sipr.runtime import ReloadError
from sipr.testing import serve

pytestmark = pytest.mark.anyio


def registrar_app(min_expires: int = 60) -> tuple[sipr.App, sipr.Registrar]:
    app = sipr.App()
    registrar = sipr.Registrar("memory:", min_expires=min_expires)
    registrar.serve(app)

    @app.route
    async def route(req: sipr.Request) -> None:
        if req.method == "REGISTER":
            await registrar.save(req)

    return app, registrar


def app_with_hook(min_expires: int = 60) -> tuple[sipr.App, asyncio.Queue[RegistrationEvent]]:
    """A registrar app whose registration hook queues every event."""
    app, _ = registrar_app(min_expires)
    events: asyncio.Queue[RegistrationEvent] = asyncio.Queue()

    @app.on_registration
    async def changed(event: RegistrationEvent) -> None:
        events.put_nowait(event)

    return app, events


async def next_event(queue: asyncio.Queue[RegistrationEvent]) -> RegistrationEvent:
    async with asyncio.timeout(5):
        return await queue.get()


async def test_registration_events_added_refreshed_removed() -> None:
    app, events = app_with_hook()
    async with serve(app) as sut:
        alice = sut.ua("alice")
        assert (await alice.register(600)).status == 200
        added = await next_event(events)
        assert (added.kind, added.aor, added.contact) == ("added", "alice@127.0.0.1", alice.contact)
        assert 590 <= added.expires <= 600
        assert added.source == f"udp:127.0.0.1:{alice.port}"
        assert (await alice.register(300)).status == 200
        refreshed = await next_event(events)
        assert (refreshed.kind, refreshed.contact) == ("refreshed", alice.contact)
        assert refreshed.expires <= 300
        assert (await alice.unregister()).status == 200
        assert (await next_event(events)).kind == "removed"
        assert events.empty()
        assert sut.stats()["events.dispatched"] == 3
        assert sut.stats()["registrar.native"] == 0  # hooks: REGISTERs go through Python


async def test_registration_event_expired() -> None:
    app, events = app_with_hook(min_expires=1)
    async with serve(app) as sut:
        bob = sut.ua("bob")
        assert (await bob.register(1)).status == 200
        assert (await next_event(events)).kind == "added"
        expired = await next_event(events)
        assert (expired.kind, expired.contact, expired.expires) == ("expired", bob.contact, 0)


async def test_an_app_without_hooks_makes_no_hook_call() -> None:
    app, _ = registrar_app()
    async with serve(app) as sut:
        for name in ("alice", "bob", "carol"):
            assert (await sut.ua(name).register()).status == 200
        stats = sut.stats()
        # Answered in the core: the REGISTERs never entered Python at all.
        assert stats["registrar.native"] == 3
        assert stats["events.dispatched"] == 0


async def test_reload_event_on_the_new_app_and_on_a_refused_reload(tmp_path: Path) -> None:
    script = tmp_path / "routes.py"
    script.write_text(
        "import sipr\n"
        "app = sipr.App()\n"
        "reloads = []\n"
        "@app.route\n"
        "async def route(req: sipr.Request) -> None:\n"
        "    req.reply(200)\n"
        "@app.on_reload\n"
        "async def reloaded(event: sipr.ReloadEvent) -> None:\n"
        "    reloads.append(event)\n"
    )
    first = sipr.App()
    refused: list[ReloadEvent] = []

    @first.route
    async def route(req: sipr.Request) -> None:
        req.reply(503)

    @first.on_reload
    async def reloaded(event: ReloadEvent) -> None:
        refused.append(event)

    async with serve(first) as sut:
        with pytest.raises(ReloadError):
            await sut.server.reload()  # no script: refused
        await first.events.settle()
        assert [e.ok for e in refused] == [False]
        sut.server.source = str(script)
        await sut.server.reload()
        new_app = sut.server.app
        await new_app.events.settle()
        module_reloads = new_app.route_handler.__globals__["reloads"]
        assert [(e.ok, e.source) for e in module_reloads] == [(True, str(script))]
        assert (await sut.ua("alice").request("OPTIONS", "x")).status == 200
