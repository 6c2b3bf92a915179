"""Test sipr apps like Python: the real Rust core in-process on loopback,
and small SIP user agents that talk to it.

    import sipr.testing

    async def test_call(app):
        async with sipr.testing.serve(app) as sut:
            alice, bob = sut.ua("alice"), sut.ua("bob")
            call = await alice.invite(bob.uri)
            assert (await call.final()).status == 200
            assert (await call.bye()).status == 200

`pip install sipr[testing]` adds the pytest plugin (fixtures `sipr_serve`,
`sipr_ca`) and `cryptography` for `TestCA`. docs/testing.md."""

from sipr.testing.harness import SUT, serve
from sipr.testing.message import Message
from sipr.testing.tls import TestCA
from sipr.testing.ua import UA, Call, ClientTransaction, Dialog, Incoming

__all__ = [
    "SUT",
    "UA",
    "Call",
    "ClientTransaction",
    "Dialog",
    "Incoming",
    "Message",
    "TestCA",
    "serve",
]
