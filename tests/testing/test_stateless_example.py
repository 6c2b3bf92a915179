"""examples/stateless.py with sipr.testing: stateless forwarding, responses
back along the Via path, no Record-Route."""

from __future__ import annotations

import pytest

from sipr.testing import serve
from tests.testing.examples import load_example

pytestmark = pytest.mark.anyio


async def test_requests_are_forwarded_to_the_next_hop_statelessly() -> None:
    example = load_example("stateless")
    async with serve(example.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob")
        example.NEXT_HOP = bob.uri
        call = await alice.invite("anyone")
        assert (await call.final()).status == 200
        seen = (await bob.next_request("INVITE")).request
        assert len(seen.vias) == 2 and "Record-Route" not in seen
        assert seen["Max-Forwards"] == "69"
        # No route set: the ACK and BYE go to bob directly, not through sipr.
        assert call.dialog.route_set == []
        assert (await call.bye()).status == 200
        assert sut.stats()["requests_forwarded"] >= 1  # the INVITE


async def test_message_forwarded_and_answered() -> None:
    example = load_example("stateless")
    async with serve(example.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob", reply=202)
        example.NEXT_HOP = bob.uri
        resp = await alice.request(
            "MESSAGE", "bob", body=b"hi", headers={"Content-Type": "text/plain"}
        )
        assert resp.status == 202
        got = (await bob.next_request("MESSAGE")).request
        assert got.body == b"hi"
