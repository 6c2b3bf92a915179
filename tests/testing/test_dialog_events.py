"""`@app.on_dialog_start` / `@app.on_dialog_end` (Kamailio's
`event_route[dialog:start]` / `[dialog:end]`): a tracked dialog fires start
when its 2xx goes upstream and end once when it leaves the table, with the
reason; an app without the hooks has the core queue nothing and makes no
Python call (docs/decisions/0053)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sipr
from sipr.testing import serve

pytestmark = pytest.mark.anyio


def tracking_proxy(
    *, hooks: bool = True, timeout: float | None = None
) -> tuple[sipr.App, asyncio.Queue[sipr.DialogEvent]]:
    """A proxy relaying every INVITE to `app.target`, tracking its dialog
    with a profile and a CDR field; with `hooks`, both dialog hooks put
    their events in the queue returned."""
    app = sipr.App()
    app.target = ""  # type: ignore[attr-defined]
    seen: asyncio.Queue[sipr.DialogEvent] = asyncio.Queue()

    @app.route
    async def route(req: sipr.Request) -> None:
        if req.method == "INVITE":
            req.track_dialog(profiles=[("user", "alice")], cdr={"account": "acme"}, timeout=timeout)
        await req.relay(app.target)  # type: ignore[attr-defined]

    if hooks:

        @app.on_dialog_start
        async def started(event: sipr.DialogEvent) -> None:
            seen.put_nowait(event)

        @app.on_dialog_end
        async def ended(event: sipr.DialogEvent) -> None:
            seen.put_nowait(event)

    return app, seen


async def next_event(queue: asyncio.Queue[sipr.DialogEvent]) -> sipr.DialogEvent:
    async with asyncio.timeout(5):
        return await queue.get()


async def test_an_answered_call_ended_by_bye_fires_start_then_end() -> None:
    app, seen = tracking_proxy()
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.target = bob.uri  # type: ignore[attr-defined]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        start = await next_event(seen)
        assert (start.kind, start.reason, start.code) == ("start", None, 200)
        assert start.id == app.dialogs.list()[0]["id"]
        assert start.call_id == call.invite.call_id
        assert start.caller.startswith("sip:alice@") and "bob" in start.callee
        assert start.profiles == ("user:alice",) and start.cdr == {"account": "acme"}
        assert start.source == f"udp:127.0.0.1:{alice.port}"
        assert start.destination == f"127.0.0.1:{bob.port}"
        assert start.to_tag and start.from_tag == call.invite.from_tag
        assert (await call.bye()).status == 200
        end = await next_event(seen)
        assert (end.kind, end.id, end.reason) == ("end", start.id, "caller_bye")
        assert end.duration >= 0 and end.time >= start.time
        await bob.next_request("INVITE")  # the first call's, done with
        # The callee hanging up is told apart.
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert (await next_event(seen)).kind == "start"
        assert (await (await bob.next_request("INVITE")).bye()).status == 200
        assert (await next_event(seen)).reason == "callee_bye"
        stats = sut.stats()
        assert stats["dialogs.events_queued"] == stats["events.dispatched"] == 4
        assert stats["dialogs.events_dropped"] == 0
        assert seen.empty()


async def test_dlg_end_and_timeout_fire_end_with_their_reason() -> None:
    app, seen = tracking_proxy()
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.target = bob.uri  # type: ignore[attr-defined]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        start = await next_event(seen)
        assert app.dialogs.end(start.id)  # `sipr ctl dlg.end ID`
        end = await next_event(seen)
        assert (end.kind, end.id, end.reason) == ("end", start.id, "admin")
        assert (await bob.next_request("BYE")).request.call_id == call.invite.call_id
    app, seen = tracking_proxy(timeout=0.3)
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.target = bob.uri  # type: ignore[attr-defined]
        assert (await (await alice.invite("bob")).final()).status == 200
        start = await next_event(seen)
        end = await next_event(seen)  # its lifetime runs out: BYE to both sides
        assert (end.kind, end.id, end.reason) == ("end", start.id, "timeout")
        assert end.duration >= 0.3
        assert (await alice.next_request("BYE")).request.method == "BYE"


async def test_a_failed_setup_fires_end_failed_without_start() -> None:
    app, seen = tracking_proxy()
    async with serve(app) as sut:
        alice, busy = sut.ua("alice"), sut.ua("busy", answer=486)
        app.target = busy.uri  # type: ignore[attr-defined]
        assert (await (await alice.invite("busy")).final()).status == 486
        end = await next_event(seen)
        assert (end.kind, end.reason, end.code, end.duration) == ("end", "failed", 486, 0)
        assert end.destination is None and seen.empty()


async def test_shutdown_ends_the_calls_still_up() -> None:
    app, seen = tracking_proxy()
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.target = bob.uri  # type: ignore[attr-defined]
        assert (await (await alice.invite("bob")).final()).status == 200
        start = await next_event(seen)
    await app.events.settle()
    end = await next_event(seen)
    assert (end.id, end.reason) == (start.id, "shutdown")


async def test_an_app_without_dialog_hooks_has_nothing_queued_nor_called() -> None:
    app, _ = tracking_proxy(hooks=False)
    async with serve(app) as sut:
        alice, bob, busy = sut.ua("alice"), sut.ua("bob"), sut.ua("busy", answer=486)
        app.target = bob.uri  # type: ignore[attr-defined]
        for _ in range(3):
            call = await alice.invite("bob")
            assert (await call.final()).status == 200
            assert (await call.bye()).status == 200
        app.target = busy.uri  # type: ignore[attr-defined]
        assert (await (await alice.invite("busy")).final()).status == 486
        stats = sut.stats()
        assert (stats["dialogs.answered"], stats["dialogs.ended.bye"]) == (3, 3)
        assert stats["dialogs.failed"] == 1
        assert stats["dialogs.events_queued"] == stats["events.dispatched"] == 0


#: A route script tracking dialogs with no hook: what a reload brings in.
TRACKING_WITHOUT_HOOKS = """
import sipr

app = sipr.App()
TARGET = ""


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "INVITE":
        req.track_dialog()
    req.relay(TARGET)
"""


async def test_a_reload_to_an_app_without_dialog_hooks_stops_the_queue(tmp_path: Path) -> None:
    script = tmp_path / "routes.py"
    script.write_text(TRACKING_WITHOUT_HOOKS)
    app, seen = tracking_proxy()
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.target = bob.uri  # type: ignore[attr-defined]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert (await next_event(seen)).kind == "start"
        sut.server.source = str(script)
        await sut.server.reload()
        sut.server.app.route_handler.__globals__["TARGET"] = bob.uri
        assert (await call.bye()).status == 200  # the call made before: no hook now
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert (await call.bye()).status == 200
        stats = sut.server.app.stats()
        assert stats["dialogs.ended.bye"] == 2
        assert stats["dialogs.events_queued"] == 1  # the first start only
        assert seen.empty()
