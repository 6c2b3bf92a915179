"""examples/proxy.py with sipr.testing: relay, serial failover, forking,
CANCEL, in-dialog requests along the Record-Route."""

from __future__ import annotations

import pytest

from sipr.testing import serve
from tests.testing.examples import load_example

pytestmark = pytest.mark.anyio


async def test_call_is_relayed_with_record_route_and_ended_with_bye() -> None:
    proxy = load_example("proxy")
    async with serve(proxy.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        proxy.TARGETS[:] = [bob.uri]
        call = await alice.invite("bob")
        final = await call.final()
        assert final.status == 200
        assert [r.status for r in call.responses][-2:] == [180, 200]
        seen = (await bob.next_request("INVITE")).request
        assert seen["Max-Forwards"] == "69"
        assert len(seen.vias) == 2
        assert "lr" in seen["Record-Route"]
        assert (await call.bye()).status == 200
        bye = await bob.next_request("BYE")
        assert bye.request.header("Route") is None  # the proxy consumed its own Route


async def test_serial_failover_to_the_next_target() -> None:
    proxy = load_example("proxy")
    async with serve(proxy.app) as sut:
        busy, bob, alice = sut.ua("busy", answer=503), sut.ua("bob"), sut.ua("alice")
        proxy.TARGETS[:] = [busy.uri, bob.uri]
        call = await alice.invite("carol")
        assert (await call.final()).status == 200
        assert (await busy.next_request("INVITE")).final_sent.status == 503  # type: ignore[union-attr]
        await (await bob.next_request("INVITE")).ack()
        await call.bye()


async def test_fork_rings_every_target_and_cancels_the_losers() -> None:
    proxy = load_example("proxy", SIPR_FORK="1")
    async with serve(proxy.app) as sut:
        slow = sut.ua("slow", answer=None)
        bob, alice = sut.ua("bob"), sut.ua("alice")
        proxy.TARGETS[:] = [slow.uri, bob.uri]
        call = await alice.invite("team")
        ringing = await slow.next_request("INVITE")
        await ringing.ring()
        assert (await call.final()).status == 200
        await ringing.wait_cancelled()
        assert ringing.final_sent is not None and ringing.final_sent.status == 487
        await call.bye()


async def test_caller_cancels_a_ringing_call() -> None:
    proxy = load_example("proxy")
    async with serve(proxy.app) as sut:
        bob, alice = sut.ua("bob", answer=None), sut.ua("alice")
        proxy.TARGETS[:] = [bob.uri]
        call = await alice.invite("bob")
        incoming = await bob.next_request("INVITE")
        await incoming.ring()
        assert (await call.response(180)).status == 180
        assert (await call.cancel()).status == 200
        assert (await call.final()).status == 487
        await incoming.wait_cancelled()
        await incoming.ack()  # the proxy ACKed bob's 487


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_call_over_streams(transport: str) -> None:
    proxy = load_example("proxy")
    async with serve(proxy.app, transports=("udp", transport)) as sut:
        alice = sut.ua("alice", transport=transport)
        bob = sut.ua("bob", transport=transport)
        proxy.TARGETS[:] = [bob.uri]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert f"SIP/2.0/{transport.upper()}" in (await bob.next_request("INVITE")).request.vias[0]
        assert (await call.bye()).status == 200


async def test_transport_translation_udp_to_tcp() -> None:
    proxy = load_example("proxy")
    async with serve(proxy.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob", transport="tcp")
        proxy.TARGETS[:] = [bob.uri]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        assert (await call.bye()).status == 200
        assert (await bob.next_request("BYE")).request.vias[0].startswith("SIP/2.0/TCP")
