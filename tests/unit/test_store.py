"""Acceptance (issue 5, point 5; issue 13, point 2): one conformance suite for
the three location stores (memory:, SQLite in a tmp file, a real
redis-server started here).

The first half drives the Store interface directly; the second runs the
registrar through a running sipr (tests/apps/registrar_app.py, its store from
SIPR_STORE) with raw UDP REGISTERs, RFC 3261 §10.3 step by step, through both
entry points of the one Rust implementation: the Python facade
(`Registrar.save` in the route) and the core's native path
(`Registrar.serve`), on every store. A redis:// store is written in Python
and has no native path: there `serve()` declines and the same cases reach
the route (docs/decisions/0028)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import pytest

from sipr.store import Binding, open_store
from tests.conftest import header, start_sipr, status_of
from tests.sipp.regkit import REGISTRAR_APP, RedisServer, SipClient, headers_all, wait_for

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.stop()


def _store_url(request, tmp_path, kind: str) -> str:
    if kind == "memory":
        return "memory:"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'location.db'}"
    server = request.getfixturevalue("redis_server")
    server.flush()
    return server.url(0)


@pytest.fixture(params=KINDS)
def store_url(request, tmp_path) -> str:
    return _store_url(request, tmp_path, request.param)


@pytest.fixture(params=["sqlite", "redis"])
def persistent_store_url(request, tmp_path) -> str:
    """The stores whose state outlives one client (memory: is process-local)."""
    return _store_url(request, tmp_path, request.param)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _b(contact: str, ttl: float, **kw) -> Binding:  # type: ignore[no-untyped-def]
    return Binding(contact=contact, expires_at=time.time() + ttl, **kw)


# -- the Store interface -----------------------------------------------------------


def test_bindings_upsert_delete_roundtrip(store_url: str) -> None:
    async def go() -> None:
        st = open_store(store_url)
        try:
            assert await st.bindings("alice@example.com") == []
            full = _b(
                "sip:alice@192.0.2.1:5060;transport=tcp", 600, q=0.5, call_id="c1", cseq=7,
                received="sip:198.51.100.7:40000;transport=udp",
                path=["<sip:edge.example.com;lr>"], user_agent="UA/1",
                instance='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
            )  # fmt: skip
            await st.update("alice@example.com", [full, _b("sip:a2@h", 600)], [])
            got = {b.contact: b for b in await st.bindings("alice@example.com")}
            assert set(got) == {full.contact, "sip:a2@h"}
            assert got[full.contact] == full  # every field survives the store
            # An upsert of the same contact replaces it; a delete removes one.
            await st.update("alice@example.com", [_b("sip:a2@h", 900, q=0.1)], [full.contact])
            (only,) = await st.bindings("alice@example.com")
            assert (only.contact, only.q, only.remaining()) == ("sip:a2@h", 0.1, 900)
            # Deleting the last binding leaves no AoR behind.
            await st.update("alice@example.com", [], ["sip:a2@h"])
            assert await st.bindings("alice@example.com") == []
            assert await st.aors() == []
            # Deleting what is not there is no error.
            await st.update("nobody@example.com", [], ["sip:x@y"])
        finally:
            await st.close()

    run(go())


def test_expired_bindings_are_filtered(store_url: str) -> None:
    async def go() -> None:
        st = open_store(store_url)
        try:
            await st.update("bob@h", [_b("sip:old@h", -5), _b("sip:new@h", 60)], [])
            await st.update("gone@h", [_b("sip:old@h", -1)], [])
            assert [b.contact for b in await st.bindings("bob@h")] == ["sip:new@h"]
            assert await st.bindings("gone@h") == []
            assert await st.aors() == ["bob@h"]
        finally:
            await st.close()

    run(go())


def test_aors_and_remove(store_url: str) -> None:
    async def go() -> None:
        st = open_store(store_url)
        try:
            await st.update("c@h", [_b("sip:c1@h", 60)], [])
            await st.update("a@h", [_b("sip:a1@h", 60), _b("sip:a2@h", 60)], [])
            await st.update("b@h", [_b("sip:b1@h", 60)], [])
            assert await st.aors() == ["a@h", "b@h", "c@h"]
            assert await st.remove("a@h") == 2
            assert await st.bindings("a@h") == []
            assert await st.remove("a@h") == 0
            assert await st.aors() == ["b@h", "c@h"]
        finally:
            await st.close()

    run(go())


def test_users(store_url: str) -> None:
    async def go() -> None:
        st = open_store(store_url)
        try:
            assert await st.get_user("sipr", "alice") is None
            assert await st.users() == []
            await st.set_user("sipr", "alice", {"MD5": "m1", "SHA-256": "s1"})
            await st.set_user("sipr", "bob", {"MD5": "m2"})
            await st.set_user("other", "alice", {"MD5": "m3"})
            assert await st.get_user("sipr", "alice") == {"MD5": "m1", "SHA-256": "s1"}
            await st.set_user("sipr", "alice", {"MD5": "m4"})  # replaced, not merged
            assert await st.get_user("sipr", "alice") == {"MD5": "m4"}
            assert await st.users() == [("other", "alice"), ("sipr", "alice"), ("sipr", "bob")]
            assert await st.users("sipr") == [("sipr", "alice"), ("sipr", "bob")]
            assert await st.remove_user("sipr", "alice") is True
            assert await st.remove_user("sipr", "alice") is False
            assert await st.get_user("sipr", "alice") is None
            assert await st.get_user("other", "alice") == {"MD5": "m3"}
            assert await st.users("sipr") == [("sipr", "bob")]
        finally:
            await st.close()

    run(go())


def test_persistent_stores_share_state(persistent_store_url: str) -> None:
    """SQLite survives reopening; redis is seen by a second client at once."""
    store_url = persistent_store_url

    async def go() -> None:
        a = open_store(store_url)
        await a.update("p@h", [_b("sip:p@h", 60)], [])
        await a.set_user("sipr", "p", {"MD5": "x"})
        if store_url.startswith("sqlite"):
            await a.close()
        b = open_store(store_url)
        try:
            assert [x.contact for x in await b.bindings("p@h")] == ["sip:p@h"]
            assert await b.get_user("sipr", "p") == {"MD5": "x"}
        finally:
            await b.close()
            if not store_url.startswith("sqlite"):
                await a.close()

    run(go())


def test_open_store_urls(tmp_path) -> None:
    assert type(open_store("memory:")).__name__ == "MemoryStore"
    st = open_store(f"sqlite:///{tmp_path}/sub/dir/x.db")  # parents are created
    assert type(st).__name__ == "SqliteStore"
    run(st.close())
    assert type(open_store("redis://127.0.0.1:1/0")).__name__ == "RedisStore"  # lazy connect
    for bad in ("bogus://x", "sqlite://", "mysql://h/db"):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError, match="synchronous"):
        open_store(f"sqlite:///{tmp_path}/y.db?synchronous=sometimes")


# -- Registrar.save through a running sipr -------------------------------------------


#: The stores whose registrar the core serves natively.
NATIVE_KINDS = ("memory", "sqlite")


@pytest.fixture(
    scope="module", params=[f"{entry}-{kind}" for kind in KINDS for entry in ("python", "native")]
)
def registrar_sipr(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """python-*: REGISTER through the route (`Registrar.save`); native-*: the
    same registrars served by the core (`Registrar.serve`)."""
    entry, _, kind = request.param.partition("-")
    tmp = tmp_path_factory.mktemp(f"reg-{request.param}")
    env = {"SIPR_NATIVE": "1"} if entry == "native" else {}
    if kind == "memory":
        url = "memory:"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp / 'location.db'}"
    else:
        url = request.getfixturevalue("redis_server").url(1)
    s = start_sipr(REGISTRAR_APP, env={"SIPR_STORE": url, "XDG_DATA_HOME": str(tmp), **env})
    s.kind = request.param
    s.served = entry == "native" and kind in NATIVE_KINDS
    yield s
    code = s.stop()
    assert code == 0, s.log()


@pytest.fixture
def ua(registrar_sipr) -> Iterator[SipClient]:
    """A UA with an AoR of its own (sip:u-XXXX@example.com), no digest."""
    c = SipClient(registrar_sipr.udp, user=f"u-{os.urandom(4).hex()}", domain="example.com")
    yield c
    c.close()


def lookup(c: SipClient, aor: str | None = None) -> list[dict]:
    aor = aor or f"sip:{c.user}@{c.domain}"
    resp = c.request("OPTIONS", "sip:lookup@127.0.0.1", headers=[f"X-AoR: {aor}"])
    assert status_of(resp) == 200, resp
    return json.loads(resp.split(b"\r\n\r\n", 1)[1])


def listed(resp: bytes) -> dict[str, dict[str, str]]:
    """The 200's Contact list: uri -> its parameters."""
    out = {}
    for value in headers_all(resp, "Contact"):
        for part in value.split(","):
            uri, _, params = part.strip().partition(">")
            out[uri.lstrip("<")] = dict(
                p.split("=", 1) for p in params.strip(";").split(";") if "=" in p
            )
    return out


def near(value: str | int, expected: int) -> bool:
    return abs(int(value) - expected) <= 2


def test_several_contacts_and_the_200_lists_every_binding(ua: SipClient) -> None:
    r = ua.register(
        ["<sip:a@192.0.2.1>, <sip:b@192.0.2.2>;expires=300", "<sip:c@192.0.2.3>;q=0.5"],
        expires=600,
    )
    assert status_of(r) == 200, r
    got = listed(r)
    assert set(got) == {"sip:a@192.0.2.1", "sip:b@192.0.2.2", "sip:c@192.0.2.3"}
    assert near(got["sip:a@192.0.2.1"]["expires"], 600)  # the Expires header
    assert near(got["sip:b@192.0.2.2"]["expires"], 300)  # the parameter wins
    assert float(got["sip:c@192.0.2.3"]["q"]) == 0.5
    assert header_date(r)
    # A later REGISTER (next CSeq) adds one; the 200 lists all four.
    r = ua.register(["<sip:d@192.0.2.4>"])
    got = listed(r)
    assert len(got) == 4 and near(got["sip:d@192.0.2.4"]["expires"], 3600), got
    # A REGISTER without Contact is a query: the same list, nothing changed.
    r = ua.register([])
    assert status_of(r) == 200 and set(listed(r)) == set(got)
    assert len(lookup(ua)) == 4


def header_date(resp: bytes) -> bool:
    return bool(headers_all(resp, "Date"))


def test_expires_clamps_and_423(registrar_sipr) -> None:
    c = SipClient(registrar_sipr.udp, user=f"u-{os.urandom(4).hex()}", domain="clamp.test")
    try:
        r = c.register(["<sip:x@192.0.2.1>"], expires=10)
        assert status_of(r) == 423, r
        assert headers_all(r, "Min-Expires") == ["30"]
        r = c.register(["<sip:x@192.0.2.1>;expires=5"])
        assert status_of(r) == 423 and headers_all(r, "Min-Expires") == ["30"]
        assert lookup(c, f"sip:{c.user}@clamp.test") == []  # nothing was stored
        r = c.register(["<sip:x@192.0.2.1>"], expires=100000)
        assert status_of(r) == 200 and near(listed(r)["sip:x@192.0.2.1"]["expires"], 120)
        r = c.register(["<sip:y@192.0.2.1>"])  # no Expires at all: the default
        assert near(listed(r)["sip:y@192.0.2.1"]["expires"], 90)
        r = c.register(["<sip:z@192.0.2.1>", "<sip:w@192.0.2.1>"])  # 4 > max_contacts
        assert status_of(r) == 403, r
        assert len(lookup(c, f"sip:{c.user}@clamp.test")) == 2
    finally:
        c.close()


def test_expires_zero_removes_one_binding(ua: SipClient) -> None:
    ua.register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"], expires=600)
    r = ua.register(["<sip:a@192.0.2.1>;expires=0"])
    assert status_of(r) == 200 and set(listed(r)) == {"sip:b@192.0.2.2"}
    r = ua.register(["<sip:b@192.0.2.2>"], expires=0)
    assert status_of(r) == 200 and listed(r) == {}
    assert lookup(ua) == []


def test_star_removes_all_and_must_stand_alone_with_expires_zero(ua: SipClient) -> None:
    ua.register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"], expires=600)
    for contacts, expires in ((["*"], None), (["*"], 5), (["*", "<sip:c@192.0.2.3>"], 0)):
        r = ua.register(contacts, expires=expires)
        assert status_of(r) == 400, (contacts, expires, r)
    assert len(lookup(ua)) == 2  # a refused REGISTER changes nothing
    r = ua.register(["*"], expires=0)
    assert status_of(r) == 200 and listed(r) == {}, r
    assert lookup(ua) == []


def test_call_id_and_cseq_ordering(ua: SipClient) -> None:
    r = ua.register(["<sip:a@192.0.2.1>"], expires=600)  # CSeq 1
    assert status_of(r) == 200
    r = ua.register(["<sip:a@192.0.2.1>"], expires=600)  # CSeq 2
    assert status_of(r) == 200
    # Same Call-ID, CSeq not higher: out of order, refused (RFC 3261 §10.3 step 7).
    for cseq in (2, 1):
        sent = ua.build(
            "REGISTER", "sip:example.com", cseq=cseq,
            headers=["Contact: <sip:a@192.0.2.1>", "Expires: 30"],
        )  # fmt: skip
        assert status_of(ua.exchange(sent)) == 500
    sent = ua.build("REGISTER", "sip:example.com", cseq=1, headers=["Contact: *", "Expires: 0"])
    assert status_of(ua.exchange(sent)) == 500
    assert near(lookup(ua)[0]["expires"], 600)  # untouched
    # Another Call-ID (another UA, or a reboot) may update with any CSeq.
    sent = ua.build(
        "REGISTER", "sip:example.com", cseq=1, call_id="other-" + ua.call_id,
        headers=["Contact: <sip:a@192.0.2.1>", "Expires: 30"],
    )  # fmt: skip
    r = ua.exchange(sent)
    assert status_of(r) == 200 and near(listed(r)["sip:a@192.0.2.1"]["expires"], 30)


def test_q_values_order_the_lookup(ua: SipClient) -> None:
    r = ua.register(
        ["<sip:low@192.0.2.1>;q=0.1", "<sip:top@192.0.2.2>;q=1.0", "<sip:mid@192.0.2.3>;q=0.5"],
        expires=600,
    )
    assert status_of(r) == 200
    assert [c["uri"] for c in lookup(ua)] == [
        "sip:top@192.0.2.2",
        "sip:mid@192.0.2.3",
        "sip:low@192.0.2.1",
    ]
    assert [c["q"] for c in lookup(ua)] == [1.0, 0.5, 0.1]
    for bad in ("2", "-0.1", "x", "nan"):
        r = ua.register([f"<sip:bad@192.0.2.9>;q={bad}"])
        assert status_of(r) == 400, (bad, r)
    assert len(lookup(ua)) == 3


def test_malformed_expires_is_400(ua: SipClient) -> None:
    for value in ("soon", "-1", "1.5", "\u00b2"):
        r = ua.register(["<sip:a@192.0.2.1>"], expires=None, headers=[f"Expires: {value}"])
        assert status_of(r) == 400, (value, r)
        r = ua.register([f"<sip:a@192.0.2.1>;expires={value}"])
        assert status_of(r) == 400, (value, r)
    assert lookup(ua) == []


def test_path_is_stored_and_echoed_when_supported(ua: SipClient) -> None:
    path = ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]
    r = ua.register(
        ["<sip:a@10.1.1.1>"], expires=600,
        headers=[f"Path: {path[0]}", f"Path: {path[1]}", "Supported: path"],
    )  # fmt: skip
    assert status_of(r) == 200
    assert headers_all(r, "Path") == path  # RFC 3327 §5.3: echoed in order
    (c,) = lookup(ua)
    assert c["path"] == path
    assert c["next_hop"] == "sip:edge1.example.net;lr"  # requests go via the Path
    # "path" anywhere in the Supported list (a comma list, or several lines).
    for supported in (["Supported: replaces, path"], ["Supported: timer", "k: 100rel,path"]):
        r = ua.register(["<sip:a@10.1.1.1>"], expires=600, headers=[f"Path: {path[0]}", *supported])
        assert headers_all(r, "Path") == [path[0]], (supported, r)
    # Without it, or with a tag that merely contains "path", the 200 carries no Path.
    for supported in ([], ["Supported: pathfinder, timer"]):
        r = ua.register(["<sip:a@10.1.1.1>"], expires=600, headers=[f"Path: {path[0]}", *supported])
        assert status_of(r) == 200 and headers_all(r, "Path") == [], (supported, r)


def test_received_kept_for_nat_only(registrar_sipr) -> None:
    user = f"u-{os.urandom(4).hex()}"
    # Behind NAT: Via and Contact say 10.0.0.7:5060, the packet came from elsewhere.
    nat = SipClient(registrar_sipr.udp, user=user, domain="example.com", via_host="10.0.0.7")
    direct = SipClient(registrar_sipr.udp, user=user, domain="example.com")
    try:
        assert status_of(nat.register(["<sip:nat@10.0.0.7:5060>"], expires=600)) == 200
        # Registered from where its Via says: no NAT, the Contact is used as is,
        # including a third-party registration of another address.
        r = direct.register([f"<sip:{user}@127.0.0.1:{direct.port}>", "<sip:3p@192.0.2.5>"], 600)
        assert status_of(r) == 200
        got = {c["uri"]: c for c in lookup(nat)}
        source = f"sip:127.0.0.1:{nat.port};transport=udp"
        assert got["sip:nat@10.0.0.7:5060"]["received"] == source
        assert got["sip:nat@10.0.0.7:5060"]["next_hop"] == source
        for uri in (f"sip:{user}@127.0.0.1:{direct.port}", "sip:3p@192.0.2.5"):
            assert got[uri]["received"] is None and got[uri]["next_hop"] == uri
    finally:
        nat.close()
        direct.close()


def test_binding_expires_and_is_gone(ua: SipClient) -> None:
    r = ua.register(["<sip:short@192.0.2.1>;expires=1", "<sip:long@192.0.2.2>"], expires=600)
    assert status_of(r) == 200 and len(listed(r)) == 2
    wait_for(lambda: len(lookup(ua)) == 1, 5, "the 1 s binding to expire", every=0.2)
    assert [c["uri"] for c in lookup(ua)] == ["sip:long@192.0.2.2"]
    assert set(listed(ua.register([]))) == {"sip:long@192.0.2.2"}


def test_native_path_answers_only_when_served(registrar_sipr, ua: SipClient) -> None:
    def native() -> int:
        r = ua.request("OPTIONS", "sip:stats@127.0.0.1")
        assert status_of(r) == 200, r
        return int(headers_all(r, "X-Native")[0])

    before = native()
    r = ua.register(["<sip:a@192.0.2.1>"], expires=600)
    assert status_of(r) == 200 and headers_all(r, "Server")[0].startswith("sipr/"), r
    clamped = SipClient(registrar_sipr.udp, user=ua.user, domain="clamp.test")
    try:
        assert status_of(clamped.register(["<sip:x@192.0.2.1>"], expires=10)) == 423
    finally:
        clamped.close()
    assert native() - before == (2 if registrar_sipr.served else 0), registrar_sipr.kind
    # Whichever path answered, Python's lookup sees the binding.
    assert [c["uri"] for c in lookup(ua)] == ["sip:a@192.0.2.1"]


def test_retransmitted_register_gets_the_same_answer(ua: SipClient) -> None:
    sent = ua.build(
        "REGISTER", "sip:example.com", headers=["Contact: <sip:a@192.0.2.1>", "Expires: 600"]
    )
    first = ua.exchange(sent)
    again = ua.exchange(sent)  # the same bytes: a retransmission, not an out-of-order request
    assert status_of(first) == status_of(again) == 200, again
    assert header(first, "To") == header(again, "To")
    assert len(lookup(ua)) == 1


def test_remove(ua: SipClient) -> None:
    ua.register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"], expires=600)
    r = ua.request("OPTIONS", "sip:remove@127.0.0.1", headers=[f"X-AoR: sip:{ua.user}@EXAMPLE.com"])
    assert status_of(r) == 200 and headers_all(r, "X-Removed") == ["2"]
    assert lookup(ua) == []
