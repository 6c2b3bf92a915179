"""examples/billing_async.py with sipr.testing: the route awaits an HTTP
billing service (run in this process) before relaying."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import pytest

from sipr.testing import serve
from tests.testing.examples import load_example

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def billing(deny: tuple[str, ...] = (), hang: tuple[str, ...] = ()) -> AsyncIterator[str]:
    service = load_example("billing_service")
    args = argparse.Namespace(delay=0.0, deny=list(deny), hang=list(hang))
    server = await asyncio.start_server(lambda r, w: service.handle(r, w, args), "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def app(address: str, **env: str) -> ModuleType:
    return load_example("billing_async", SIPR_BILLING=address, **env)


async def test_authorized_caller_is_relayed_refused_one_gets_402() -> None:
    async with billing(deny=("mallory",)) as address:
        example = app(address)
        async with serve(example.app) as sut:
            bob = sut.ua("bob")
            example.TARGET = bob.uri
            alice, mallory = sut.ua("alice"), sut.ua("mallory")
            call = await alice.invite("bob")
            assert (await call.final()).status == 200
            assert (await (await mallory.invite("bob")).final()).status == 402
            assert example.counters == {"authorized": 1, "refused": 1, "cancelled": 0}
            assert (await call.bye()).status == 200


async def test_cancel_while_billing_is_asked_ends_the_handler() -> None:
    async with billing(hang=("alice",)) as address:
        example = app(address)
        async with serve(example.app) as sut:
            alice = sut.ua("alice")
            call = await alice.invite("bob")
            assert (await call.response(100)).status == 100
            assert (await call.cancel()).status == 200
            assert (await call.final()).status == 487
            stats = await alice.request("OPTIONS", "billing-stats")
            assert stats["X-cancelled"] == "1"


async def test_billing_outage_hits_the_route_deadline() -> None:
    async with billing(hang=("alice",)) as address:
        example = app(address, SIPR_ROUTE_DEADLINE="0.2")
        async with serve(example.app) as sut:
            final = await (await sut.ua("alice").invite("bob")).final()
            assert (final.status, final.reason) == (503, "Billing Unavailable")
            assert sut.stats()["handlers.deadline_expired"] == 1
