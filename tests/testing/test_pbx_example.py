"""examples/pbx.py with sipr.testing: digest registration (in the core),
authenticated calls to registered phones, refusals."""

from __future__ import annotations

import pytest

from sipr.testing import serve
from tests.testing.examples import load_example

pytestmark = pytest.mark.anyio

USERS = "alice:alice-pw,bob:bob-pw"


def pbx(**env: str):  # type: ignore[no-untyped-def]
    return load_example("pbx", SIPR_STORE="memory:", SIPR_USERS=USERS, **env)


async def test_registered_phones_call_each_other_with_digest() -> None:
    example = pbx()
    async with serve(example.app) as sut:
        alice = sut.ua("alice", password="alice-pw")
        bob = sut.ua("bob", password="bob-pw")
        assert (await alice.register()).status == 200
        ok = await bob.register()
        assert ok.status == 200
        assert bob.contact in ok["Contact"]
        call = await alice.invite("bob")
        assert (await call.final()).status == 200
        finals = [r.status for r in call.responses if (r.status or 0) >= 200]
        assert finals == [407, 200]  # challenged, then answered with credentials
        assert "Proxy-Authorization" in call.invite
        assert (await bob.next_request("INVITE")).request.uri == bob.contact
        assert (await call.bye()).status == 200


async def test_register_without_credentials_is_challenged_and_a_wrong_password_refused() -> None:
    example = pbx()
    async with serve(example.app) as sut:
        anonymous = sut.ua("alice")
        challenge = await anonymous.register()
        assert challenge.status == 401
        assert "WWW-Authenticate" in challenge
        wrong = sut.ua("bob", password="guess")
        assert (await wrong.register()).status in (401, 403)


async def test_unregistered_callee_gets_480_and_unregister_removes_the_contact() -> None:
    example = pbx(SIPR_AUTH_CALLS="0")
    async with serve(example.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob", password="bob-pw")
        assert (await (await alice.invite("bob")).final()).status == 480
        assert (await bob.register()).status == 200
        assert (await (await alice.invite("bob")).final()).status == 200
        gone = await bob.unregister()
        assert gone.status == 200 and "Contact" not in gone
        assert (await (await alice.invite("bob")).final()).status == 480


async def test_busy_callee_and_registration_in_python() -> None:
    example = pbx(SIPR_AUTH_CALLS="0", SIPR_NATIVE="0")
    async with serve(example.app) as sut:
        alice, bob = sut.ua("alice"), sut.ua("bob", password="bob-pw", answer=486)
        assert (await bob.register()).status == 200
        assert (await (await alice.invite("bob")).final()).status == 486
        options = await alice.request("OPTIONS", sut.uri())
        assert options.status == 200
