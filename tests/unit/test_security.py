"""The Python API of the security services (issue 17): settings checked
before anything applies, the blocklist as the route uses it, token buckets
(memory), address rules, topology stores."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

import sipr
from sipr import limits
from sipr.acl import AddressGroups, _row, save_rules
from sipr.security import Security, validate
from sipr.topology import SqliteDialogStore, open_dialog_store


def fake_request(ua: str | None, user: str | None) -> SimpleNamespace:
    headers = {"User-Agent": ua} if ua else {}
    return SimpleNamespace(
        headers=SimpleNamespace(get=headers.get),
        from_=SimpleNamespace(uri=SimpleNamespace(user=user)),
    )


def test_defaults_suit_real_phones() -> None:
    app = sipr.App()
    s = app.security
    assert s.flood.enabled and s.auth.enabled
    assert list(s.trusted) == ["127.0.0.0/8", "::1"]
    assert s.sanity_checks() == [] and not s.method_limits and s.topology is None
    validate(s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (lambda: {"trusted": ["10.0.0.0/33"]}, "trusted"),
        (lambda: {"flood": sipr.FloodGuard(limit=0)}, "flood.limit"),
        (lambda: {"auth": sipr.AuthBans(window=-1)}, "auth.window"),
        (lambda: {"sanity": ["cseq", "nonsense"]}, "nonsense"),
        (lambda: {"method_limits": {"INVITE": (5, 0)}}, "INVITE"),
        (lambda: {"method_limits": {"INVITE": "fast"}}, "INVITE"),
    ],
)
def test_bad_settings_are_named(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    """Refused when made (settings bounds) or when validated, naming the setting."""
    with pytest.raises(ValueError, match=message):
        validate(Security(**kwargs()))


def test_blocklist_from_the_route() -> None:
    b = sipr.Blocklist(from_users=["1001"], action="route")
    assert b.check(fake_request("friendly-scanner", "x")) == "user-agent friendly-scanner"
    assert b.check(fake_request("Yealink SIP-T46S", "alice")) is None
    assert b.check(fake_request(None, "1001")) == "from-user 1001"
    with pytest.raises(ValueError, match="action"):
        sipr.Blocklist(action="explode")
    assert Security(sanity=True).sanity_checks() == [
        "ruri_scheme", "cseq", "content_length", "proxy_require", "uris"
    ]  # fmt: skip


def test_memory_buckets() -> None:
    async def run() -> None:
        limiter = limits.use("memory:")
        got = [bool(await limits.take("k", 3, 1.0)) for _ in range(5)]
        assert got == [True, True, True, False, False]
        refused = await limits.take("k", 3, 1.0)
        assert 0 < refused.retry_after <= 1 / 3 and refused.retry_after_header == "1"
        assert await limits.take("other", 3, 1.0)
        assert bool(await limits.take("burst", 1, 10.0, burst=4)) is True
        assert {k for k, *_ in limiter.snapshot()} == {"k", "other", "burst"}
        with pytest.raises(ValueError, match="per"):
            await limits.take("k", 3, 0)
        with pytest.raises(ValueError, match="burst"):
            await limits.take("k", 0.5, 1.0)
        never = await limits.take("zero", 0, 1.0, burst=1)
        assert never and not (await limits.take("zero", 0, 1.0, burst=1))
        assert math.isinf((await limits.take("zero", 0, 1.0, burst=1)).retry_after)

    asyncio.run(run())
    with pytest.raises(ValueError, match="backend"):
        limits.use("mysql://x")
    limits.use("memory:")


def test_address_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _row(("carriers", "10.0.0.0/8")) == ("carriers", "10.0.0.0/8", "*", "*", "")
    assert _row(("pbx", "10.1.1.1", 5060)) == ("pbx", "10.1.1.1", "5060", "*", "")
    with pytest.raises(ValueError):
        _row(("lonely",))
    url = f"sqlite:///{tmp_path}/acl.db"
    assert asyncio.run(save_rules(url, [("carriers", "192.0.2.0/24", 5060, "udp", "A")])) == 1
    text, rows = asyncio.run(AddressGroups(url, rules=[("pbx", "10.0.0.1")]).read())
    assert text == "" and rows == [
        ("pbx", "10.0.0.1", "*", "*", ""),
        ("carriers", "192.0.2.0/24", "5060", "udp", "A"),
    ]
    with pytest.raises(ValueError, match="No such file"):
        asyncio.run(AddressGroups(tmp_path / "missing.txt").read())


def test_dialog_store_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    record = {"id": "1", "expires": time.time() + 60, "a": {"tag": "x"}}
    stale = {"id": "2", "expires": time.time() - 1}

    async def run() -> None:
        store = open_dialog_store(f"sqlite:///{tmp_path}/t.db")
        assert isinstance(store, SqliteDialogStore)
        await store.write([("upsert", record), ("upsert", stale)])
        await store.close()
        again = open_dialog_store(f"sqlite:///{tmp_path}/t.db")
        assert await again.load() == [record]
        await again.write([("delete", {"id": "1"})])
        assert await again.load() == []
        await again.close()

    asyncio.run(run())
    with pytest.raises(ValueError, match="unknown topology store"):
        open_dialog_store("postgres://x")
