"""`@app.on_send` (Kamailio's onsend_route: see and refuse each request as it
leaves) and `@app.on_timeout` (a relayed branch got no answer in time), and
what they cost an app that has none: no call from the core into Python."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sipr
from sipr.testing import serve

pytestmark = pytest.mark.anyio


def guarded_proxy(
    blocked: set[int], *, fail: bool = False
) -> tuple[sipr.App, list[sipr.SendEvent], list[int]]:
    """A proxy relaying INVITEs to `app.targets` (a parallel fork) and
    forwarding MESSAGEs statelessly to the first target, whose on_send hook
    records every request and refuses those for the ports in `blocked`."""
    app = sipr.App()
    app.targets: list[str] = []  # type: ignore[attr-defined, misc]
    sends: list[sipr.SendEvent] = []
    relay_results: list[int] = []

    @app.route
    async def route(req: sipr.Request) -> None:
        targets: list[str] = app.targets  # type: ignore[attr-defined]
        if req.method == "MESSAGE":
            req.forward(targets[0])
            return
        resp = await req.relay(targets if len(targets) > 1 else targets[0])
        relay_results.append(resp.status)

    @app.on_send
    def guard(event: sipr.SendEvent) -> bool:
        sends.append(event)
        if fail:
            raise RuntimeError("the guard's database is down")
        return event.port not in blocked

    return app, sends, relay_results


async def test_on_send_sees_each_branch_and_in_dialog_request_and_refuses_one() -> None:
    blocked: set[int] = set()
    app, sends, _ = guarded_proxy(blocked)
    async with serve(app) as sut:
        alice, bob, carol = sut.ua("alice"), sut.ua("bob"), sut.ua("carol", answer=None)
        blocked.add(carol.port)  # carol's branch is refused: the fork goes on with bob
        app.targets[:] = [carol.uri, bob.uri]  # type: ignore[attr-defined]
        call = await alice.invite("team")
        assert (await call.final()).status == 200
        await (await bob.next_request("INVITE")).ack()  # the ACK went through the proxy too
        assert [(e.method, e.transport, e.host, e.port) for e in sends] == [
            ("INVITE", "udp", "127.0.0.1", carol.port),
            ("INVITE", "udp", "127.0.0.1", bob.port),
            ("ACK", "udp", "127.0.0.1", bob.port),
        ]
        assert sends[1].uri == call.invite.uri and sends[1].call_id == call.invite.call_id
        assert sends[0].destination == f"udp:127.0.0.1:{carol.port}"
        assert (await call.bye()).status == 200  # routed by the core along Record-Route
        assert [(e.method, e.port) for e in sends[3:]] == [("BYE", bob.port)]
        assert carol.received == []  # the refused INVITE never left
        stats = sut.stats()
        assert stats["events.sends_refused"] == 1
        assert stats["events.core_calls"] == len(sends) == 4


async def test_a_refused_relay_is_a_403_for_the_handler_and_the_caller() -> None:
    blocked: set[int] = set()
    app, sends, relay_results = guarded_proxy(blocked)
    async with serve(app) as sut:
        alice, carol = sut.ua("alice"), sut.ua("carol")
        blocked.add(carol.port)
        app.targets[:] = [carol.uri]  # type: ignore[attr-defined]
        call = await alice.invite("carol")
        assert (await call.final()).status == 403
        assert relay_results == [403]  # the handler's failure route saw it
        # A stateless forward is refused the same way.
        resp = await alice.request("MESSAGE", "carol", body=b"hi")
        assert resp.status == 403
        assert [(e.method, e.port) for e in sends] == [
            ("INVITE", carol.port),
            ("MESSAGE", carol.port),
        ]
        assert carol.received == []
        assert sut.stats()["events.sends_refused"] == 2


async def test_a_failing_on_send_hook_refuses() -> None:
    app, sends, _ = guarded_proxy(set(), fail=True)
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.targets[:] = [bob.uri]  # type: ignore[attr-defined]
        assert (await (await alice.invite("bob")).final()).status == 403
        assert [e.port for e in sends] == [bob.port]
        assert bob.received == []


def test_on_send_must_be_a_plain_function() -> None:
    app = sipr.App()

    async def guard(event: sipr.SendEvent) -> bool:
        return True

    with pytest.raises(TypeError, match="plain function"):
        app.on_send(guard)  # type: ignore[arg-type]


#: A route script with no event hook: what a reload brings in.
RELAY_WITHOUT_HOOKS = """
import sipr

app = sipr.App()
TARGET = ""


@app.route
async def route(req: sipr.Request) -> None:
    req.relay(TARGET)
"""


def timeout_app(**app_options: object) -> tuple[sipr.App, asyncio.Queue[sipr.TimeoutEvent]]:
    app = sipr.App(**app_options)  # type: ignore[arg-type]
    app.target = ""  # type: ignore[attr-defined]
    app.relay_timeout = None  # type: ignore[attr-defined]
    timeouts: asyncio.Queue[sipr.TimeoutEvent] = asyncio.Queue()

    @app.route
    async def route(req: sipr.Request) -> None:
        await req.relay(app.target, timeout=app.relay_timeout)  # type: ignore[attr-defined]

    @app.on_timeout
    async def timed_out(event: sipr.TimeoutEvent) -> None:
        timeouts.put_nowait(event)

    return app, timeouts


async def next_timeout(queue: asyncio.Queue[sipr.TimeoutEvent]) -> sipr.TimeoutEvent:
    async with asyncio.timeout(5):
        return await queue.get()


async def test_on_timeout_relay_timeout() -> None:
    app, timeouts = timeout_app()
    async with serve(app) as sut:
        alice, mute = sut.ua("alice"), sut.ua("mute", answer=None)
        app.target, app.relay_timeout = mute.uri, 0.2  # type: ignore[attr-defined]
        call = await alice.invite("mute")
        assert (await call.final()).status == 408
        event = await next_timeout(timeouts)
        assert (event.kind, event.method, event.port) == ("relay_timeout", "INVITE", mute.port)
        assert event.uri == call.invite.uri and event.call_id == call.invite.call_id
        assert (await mute.next_request("INVITE")).request.method == "INVITE"
        assert timeouts.empty()


async def test_on_timeout_timer_b_no_response() -> None:
    app, timeouts = timeout_app(timers={"t1": 0.005})  # Timer B: 64*T1 = 0.32 s
    async with serve(app) as sut:
        alice, mute = sut.ua("alice"), sut.ua("mute", answer=None)
        app.target = mute.uri  # type: ignore[attr-defined]
        call = await alice.invite("mute")
        assert (await call.final()).status == 408
        event = await next_timeout(timeouts)
        assert (event.kind, event.transport, event.port) == ("no_response", "udp", mute.port)


async def test_on_timeout_timer_c_after_a_provisional() -> None:
    app, timeouts = timeout_app(timers={"timer_c": 0.3})
    async with serve(app) as sut:
        alice, slow = sut.ua("alice"), sut.ua("slow", answer=None)
        app.target = slow.uri  # type: ignore[attr-defined]
        call = await alice.invite("slow")
        ringing = await slow.next_request("INVITE")
        await ringing.ring()
        assert (await call.provisional()).status == 180
        await ringing.wait_cancelled()  # Timer C: the proxy cancels the branch
        assert (await call.final()).status == 408
        event = await next_timeout(timeouts)
        assert (event.kind, event.port) == ("timer_c", slow.port)


async def test_an_app_without_send_or_timeout_hooks_gets_no_call_from_the_core() -> None:
    app = sipr.App()
    app.target = ""  # type: ignore[attr-defined]

    @app.route
    async def route(req: sipr.Request) -> None:
        await req.relay(app.target, timeout=0.2)  # type: ignore[attr-defined]

    async with serve(app) as sut:
        alice, bob, mute = sut.ua("alice"), sut.ua("bob"), sut.ua("mute", answer=None)
        app.target = bob.uri  # type: ignore[attr-defined]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert (await call.bye()).status == 200
        app.target = mute.uri  # type: ignore[attr-defined]
        assert (await (await alice.invite("mute")).final()).status == 408
        counters = ("requests_forwarded", "events.core_calls", "events.dispatched")
        forwarded, core_calls, hook_calls = (sut.stats()[k] for k in counters)
        assert forwarded >= 3 and core_calls == hook_calls == 0


async def test_a_reload_to_an_app_without_hooks_stops_the_calls(tmp_path: Path) -> None:
    script = tmp_path / "routes.py"
    script.write_text(RELAY_WITHOUT_HOOKS)
    app, sends, _ = guarded_proxy(set())
    async with serve(app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        app.targets[:] = [bob.uri]  # type: ignore[attr-defined]
        assert (await (await alice.invite("bob")).final()).status == 200
        await (await bob.next_request("INVITE")).ack()
        assert sut.stats()["events.core_calls"] == len(sends) == 2  # INVITE, ACK
        sut.server.source = str(script)
        await sut.server.reload()
        sut.app = sut.server.app
        sut.server.app.route_handler.__globals__["TARGET"] = bob.uri
        assert (await (await alice.invite("bob")).final()).status == 200
        await (await bob.next_request("INVITE")).ack()
        assert sut.server.app.stats()["events.core_calls"] == 2  # unchanged
        assert len(sends) == 2
