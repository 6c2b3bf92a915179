"""Acceptance (issue 5, points 1-4): examples/pbx.py (registrar + digest auth +
calls to registered contacts) between real SIPp phones and Python digest
clients, over the memory:, SQLite and redis stores.

The pbx offers MD5 only by default (decision 0020); SIPp speaks only MD5 and
answers the first challenge, so `pbx_sipp` offers "MD5,SHA-256" to show the
MD5 answer is taken with SHA-256 offered too. SHA-256 is exercised by the Python
client (tests/sipp/regkit.py), which computes the digest itself, against
`pbx_sha256` ("SHA-256,MD5")."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipr.auth import ha1_all
from sipr.store import open_store
from tests.conftest import free_port, header, status_of
from tests.sipp.regkit import (
    PBX,
    REGISTRAR_APP,
    RedisServer,
    SipClient,
    Sipp,
    challenges,
    headers_all,
    reap_sipp,
    render,
    sipp_register,
    wait_for,
)

pytestmark = pytest.mark.sipp


@pytest.fixture(autouse=True)
def _no_sipp_left() -> Iterator[None]:
    yield
    reap_sipp()


def add_user(url: str, user: str = "alice", password: str = "secret", realm: str = "sipr"):
    async def go() -> None:
        st = open_store(url)
        try:
            await st.set_user(realm, user, ha1_all(user, realm, password))
        finally:
            await st.close()

    asyncio.run(go())


def pbx_env(tmp: Path, store: str, **extra: str) -> dict[str, str]:
    return {
        "SIPR_STORE": store,
        "SIPR_REALM": "sipr",
        "XDG_DATA_HOME": str(tmp / "xdg"),
        **extra,
    }


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'pbx.db'}"
    add_user(url)
    add_user(url, "bob", "bobpw")
    return url


NATIVE_USERS = "alice:secret,bob:bobpw"
NATIVE_LOG = "answered in the core"


@pytest.fixture(params=["python", "native", "native-sqlite"])
def path(request) -> str:  # type: ignore[no-untyped-def]
    """python: SQLite store, REGISTER through the app's route (auth.check +
    save; SIPR_NATIVE=0); native: memory: store and users in a dict, REGISTER
    answered by the core (`registrar.serve`), everything else through Python
    as before; native-sqlite: the pbx as shipped, SQLite store with its users
    (`sipr user add`), REGISTER answered by the core.
    native-thread (set per test): native with SIPR_UDP_READER=thread, the UDP
    socket read by a Rust thread that answers REGISTERs itself and queues the
    rest for the event loop (docs/decisions/0019)."""
    return request.param


#: The paths, with the UDP reader thread, for the tests that cover it.
ALL_PATHS = ["python", "native", "native-sqlite", "native-thread"]


def udp_reader_threads(pid: int) -> list[str]:
    names = (
        Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
        for t in os.listdir(f"/proc/{pid}/task")
    )
    return [n for n in names if n.startswith("sipr-udp-")]


def start_pbx(sipr_factory, tmp_path: Path, sqlite_url: str, path: str, **extra: str):  # type: ignore[no-untyped-def]
    native = path.startswith("native")
    if path == "native-thread":
        extra = {**extra, "SIPR_UDP_READER": "thread"}
    if path == "native-sqlite":
        env = pbx_env(tmp_path, sqlite_url, **extra)
    elif native:
        env = pbx_env(tmp_path, "memory:", SIPR_USERS=NATIVE_USERS, **extra)
    else:
        env = pbx_env(tmp_path, sqlite_url, SIPR_NATIVE="0", **extra)
    s = sipr_factory(PBX, env=env)
    assert (NATIVE_LOG in s.log()) == native, s.log()
    expected = [f"sipr-udp-{s.udp[1]}"] if path == "native-thread" else []
    assert udp_reader_threads(s.proc.pid) == expected
    return s


@pytest.fixture
def pbx_sipp(sipr_factory, tmp_path: Path, sqlite_url: str, path: str):  # type: ignore[no-untyped-def]
    """The pbx as SIPp phones need it: MD5 offered first, calls unauthenticated,
    bindings as short as 1 s allowed."""
    return start_pbx(
        sipr_factory, tmp_path, sqlite_url, path, SIPR_DIGEST_ALGORITHMS="MD5, SHA-256",
        SIPR_AUTH_CALLS="0", SIPR_MIN_EXPIRES="1",
    )  # fmt: skip


@pytest.fixture
def pbx_default(sipr_factory, tmp_path: Path, sqlite_url: str, path: str):  # type: ignore[no-untyped-def]
    """The pbx as shipped: MD5 offered (decision 0020), calls authenticated."""
    return start_pbx(sipr_factory, tmp_path, sqlite_url, path)


@pytest.fixture
def pbx_sha256(sipr_factory, tmp_path: Path, sqlite_url: str, path: str):  # type: ignore[no-untyped-def]
    """The pbx configured for SHA-256: offered first, MD5 next (RFC 8760)."""
    return start_pbx(sipr_factory, tmp_path, sqlite_url, path, SIPR_DIGEST_ALGORITHMS="SHA-256,MD5")


def call_alice(sipp: str, pbx_addr: tuple[str, int], tmp: Path):  # type: ignore[no-untyped-def]
    scen = render("uac_call.xml", tmp)
    return Sipp(sipp, port=free_port(), scenario=scen, remote=pbx_addr, workdir=tmp).wait()


def uas(sipp: str, port: int, scenario: str, tmp: Path) -> Sipp:
    return Sipp(sipp, port=port, scenario=render(scenario, tmp), workdir=tmp)


def firsts(result) -> list[str]:  # type: ignore[no-untyped-def]
    """First lines of what SIPp received, retransmissions folded."""
    return list(dict.fromkeys(first for _, first in result.received(".")))


def authorized_register(messages: str) -> str:
    """The REGISTER SIPp sent with its Authorization header."""
    for block in messages.split("-" * 47):
        if "message sent" in block and "Authorization:" in block:
            return block.split(":\n\n", 1)[1].strip("\n")
    raise AssertionError(f"no authorized REGISTER in:\n{messages}")


# 1 -- digest: SIPp (MD5), Python (SHA-256 and MD5) ---------------------------------


@pytest.mark.parametrize("path", ALL_PATHS)
def test_sipp_register_md5_401_then_200_wrong_password_403_replay_403(
    sipp: str, pbx_sipp, tmp_path: Path
) -> None:
    ok = sipp_register(sipp, pbx_sipp.udp, free_port(), tmp_path)
    assert ok.returncode == 0 and ok.successful == 1, ok.summary()
    assert firsts(ok) == [
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 200 OK",
    ]
    sent = authorized_register(ok.messages)
    assert "algorithm=MD5" in sent and "qop=auth" in sent and "nc=00000001" in sent

    bad = sipp_register(sipp, pbx_sipp.udp, free_port(), tmp_path, password="wrong", expect=403)
    assert bad.returncode == 0 and bad.successful == 1, bad.summary()
    assert firsts(bad) == [
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 403 Forbidden (unknown user or wrong password)",
    ]

    # The same authorized REGISTER bytes again, as a new transaction (new Via
    # branch, from another socket, next CSeq): the nonce-count was used -> 403.
    c = SipClient(pbx_sipp.udp)
    replay = sent.replace("\n", "\r\n") + "\r\n\r\n"  # Content-Length: 0
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{c.port};branch=z9hG4bK-replay{os.urandom(3).hex()};rport"
    replay = re.sub(r"Via: [^\r]+", via, replay, count=1)
    replay = replay.replace("CSeq: 2 REGISTER", "CSeq: 3 REGISTER")
    assert authorized_register(ok.messages).split("Authorization: ")[1] in replay.replace("\r", "")
    try:
        c.sock.sendto(replay.encode(), pbx_sipp.udp)
        c.sock.settimeout(5)
        resp = c.sock.recv(65535)
        assert status_of(resp) == 403, resp
        assert b"replayed" in resp.split(b"\r\n", 1)[0]
    finally:
        c.close()


@pytest.mark.parametrize("path", ALL_PATHS)
def test_default_pbx_offers_md5_only(pbx_default) -> None:
    c = SipClient(pbx_default.udp, auth=("alice", "secret"), algorithm="MD5")
    try:
        first = c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=["Contact: <sip:a@h>"]))
        assert status_of(first) == 401
        assert list(challenges(first)) == ["MD5"]
        # A SHA-256 answer to an MD5-only challenge is challenged again, never accepted.
        params = challenges(first)["MD5"]
        sha = SipClient(pbx_default.udp, auth=("alice", "secret"), algorithm="SHA-256")
        try:
            forged = first.replace(b"algorithm=MD5", b"algorithm=SHA-256")
            cred = sha.authorization(forged, "REGISTER", "sip:127.0.0.1")
            assert params["nonce"] in cred
            again = sha.exchange(sha.build("REGISTER", "sip:127.0.0.1", headers=[cred]))
            assert status_of(again) == 401 and list(challenges(again)) == ["MD5"], again
        finally:
            sha.close()
        assert status_of(c.register(expires=600)) == 200
    finally:
        c.close()


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_python_digest_client(pbx_sha256, algorithm: str) -> None:
    c = SipClient(pbx_sha256.udp, auth=("alice", "secret"), algorithm=algorithm)
    try:
        first = c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=["Contact: <sip:a@h>"]))
        assert status_of(first) == 401
        offered = challenges(first)
        assert list(offered) == ["SHA-256", "MD5"]  # strongest first (RFC 8760)
        assert all(p["qop"] == "auth" and p["realm"] == "sipr" for p in offered.values())
        r = c.register(expires=600)
        assert status_of(r) == 200, r
        assert f"algorithm={algorithm}," in c.last_authorized.data.decode()
        # Replayed credentials (same nonce and nc) in a new transaction: 403.
        again = c.build(
            "REGISTER", "sip:127.0.0.1",
            headers=[ln for ln in c.last_authorized.data.decode().split("\r\n")
                     if ln.startswith(("Contact:", "Expires:", "Authorization:"))],
        )  # fmt: skip
        resp = c.exchange(again)
        assert status_of(resp) == 403 and b"replayed" in resp, resp
        # The next nonce-count on the same nonce is a fresh request (RFC 7616 §3.4).
        cred = c.authorization(c.last_challenge, "REGISTER", "sip:127.0.0.1")
        assert "nc=00000002" in cred
        r = c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=[cred]))
        assert status_of(r) == 200, r
    finally:
        c.close()


@pytest.mark.parametrize("path", ALL_PATHS)
def test_retransmitted_authorized_register_is_answered_200_again(pbx_default) -> None:
    c = SipClient(pbx_default.udp, auth=("alice", "secret"), algorithm="MD5")
    try:
        assert status_of(c.register(expires=600)) == 200
        # The same authorized bytes again (same branch): a retransmission, not a replay.
        again = c.exchange(c.last_authorized)
        assert status_of(again) == 200, again
    finally:
        c.close()


def test_wrong_password_and_unknown_user_are_403(pbx_default) -> None:
    for user, password in (("alice", "nope"), ("mallory", "secret")):
        c = SipClient(pbx_default.udp, user=user, auth=(user, password), algorithm="MD5")
        try:
            r = c.register(expires=600)
            assert status_of(r) == 403, r
        finally:
            c.close()


def test_non_ascii_digest_response_is_403_not_an_error(pbx_default) -> None:
    c = SipClient(pbx_default.udp)
    try:
        first = c.exchange(c.build("REGISTER", "sip:127.0.0.1"))
        nonce = challenges(first)["MD5"]["nonce"]
        cred = (
            f'Authorization: Digest username="alice", realm="sipr", nonce="{nonce}", '
            f'uri="sip:127.0.0.1", response="\u00e9\u00e9", algorithm=MD5, qop=auth, '
            f'nc=00000001, cnonce="x"'
        )
        assert status_of(c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=[cred]))) == 403
        forged = cred.replace(nonce, nonce.split(".")[0] + ".\u00e9")
        r = c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=[forged]))
        assert status_of(r) == 401  # not our nonce: challenged afresh
    finally:
        c.close()


def test_invite_challenged_with_407_and_identity_checked(pbx_default) -> None:
    caller = SipClient(pbx_default.udp)
    try:
        r = caller.invite("sip:nobody@127.0.0.1")
        assert status_of(r) == 407, r
        assert headers_all(r, "Proxy-Authenticate") and not headers_all(r, "WWW-Authenticate")
    finally:
        caller.close()
    # Authenticated as alice, calling as alice: past auth, nobody registered -> 480.
    alice = SipClient(pbx_default.udp, auth=("alice", "secret"), algorithm="MD5")
    try:
        first = alice.invite("sip:nobody@127.0.0.1")
        cred = alice.authorization(first, "INVITE", "sip:nobody@127.0.0.1")
        assert cred.startswith("Proxy-Authorization:")
        assert status_of(alice.invite("sip:nobody@127.0.0.1", headers=[cred])) == 480
    finally:
        alice.close()
    # bob's credentials used to register alice's AoR, or to call as alice: 403.
    mallory = SipClient(pbx_default.udp, user="alice", auth=("bob", "bobpw"), algorithm="MD5")
    try:
        r = mallory.register(expires=600)
        assert status_of(r) == 403 and b"identity" in r.split(b"\r\n", 1)[0], r
        first = mallory.invite("sip:nobody@127.0.0.1")
        cred = mallory.authorization(first, "INVITE", "sip:nobody@127.0.0.1")
        r = mallory.invite("sip:nobody@127.0.0.1", headers=[cred])
        assert status_of(r) == 403 and b"identity" in r.split(b"\r\n", 1)[0], r
    finally:
        mallory.close()


def test_expired_nonce_is_stale(sipr_factory, tmp_path: Path, sqlite_url: str, path: str) -> None:
    if path == "native":
        env = pbx_env(
            tmp_path, "memory:", SIPR_AUTH="1", SIPR_NONCE_TTL="1", SIPR_NATIVE="1",
            SIPR_USERS=NATIVE_USERS,
        )  # fmt: skip
    elif path == "native-sqlite":
        env = pbx_env(tmp_path, sqlite_url, SIPR_AUTH="1", SIPR_NONCE_TTL="1", SIPR_NATIVE="1")
    else:
        env = pbx_env(tmp_path, sqlite_url, SIPR_AUTH="1", SIPR_NONCE_TTL="1")
    app = sipr_factory(REGISTRAR_APP, env=env)
    c = SipClient(app.udp, auth=("alice", "secret"), algorithm="SHA-256")
    try:
        first = c.exchange(c.build("REGISTER", "sip:127.0.0.1"))
        assert "stale" not in challenges(first)["SHA-256"]

        def attempt() -> bytes | None:
            # Each attempt a fresh nonce-count on the same (ageing) nonce.
            cred = c.authorization(first, "REGISTER", "sip:127.0.0.1")
            r = c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=[cred]))
            assert status_of(r) in (200, 401), r
            return r if status_of(r) == 401 else None

        stale = wait_for(attempt, 5, "the nonce to go stale", every=0.2)
        assert all(p.get("stale") == "true" for p in challenges(stale).values()), stale
        # The client retries with the new nonce without asking the user again.
        cred = c.authorization(stale, "REGISTER", "sip:127.0.0.1")
        assert status_of(c.exchange(c.build("REGISTER", "sip:127.0.0.1", headers=[cred]))) == 200
    finally:
        c.close()


# 2 -- calls to registered contacts ----------------------------------------------


@pytest.mark.parametrize("path", ALL_PATHS)
def test_register_then_invite_reaches_the_registered_sipp_uas(
    sipp: str, pbx_sipp, tmp_path: Path
) -> None:
    phone = free_port()
    reg = sipp_register(sipp, pbx_sipp.udp, phone, tmp_path)
    assert reg.successful == 1, reg.summary()
    callee = uas(sipp, phone, "uas_answer.xml", tmp_path)  # the phone, now answering
    call = call_alice(sipp, pbx_sipp.udp, tmp_path)
    answered = callee.wait()
    assert call.returncode == 0 and call.successful == 1, call.summary()
    assert answered.successful == 1, answered.summary()
    invite = answered.received("^INVITE ")[0]  # (a retransmission may follow)
    assert invite[1] == f"INVITE sip:alice@127.0.0.1:{phone} SIP/2.0"  # R-URI: the Contact
    # SIGTERM: drained and stopped (the reader thread too), not killed.
    assert pbx_sipp.stop() == 0


def test_contacts_are_tried_in_q_order(sipp: str, pbx_sipp, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    # A third-party registration (RFC 3261 §10.2) of two phones, sent from
    # elsewhere: the pbx must call the Contacts, not the REGISTER's source.
    c = SipClient(pbx_sipp.udp, auth=("alice", "secret"))
    try:
        r = c.register(
            [f"<sip:alice@127.0.0.1:{second}>;q=0.4", f"<sip:alice@127.0.0.1:{first}>;q=0.9"],
            expires=600,
        )
        assert status_of(r) == 200, r
    finally:
        c.close()
    busy = uas(sipp, first, "uas_unavailable.xml", tmp_path)
    answers = uas(sipp, second, "uas_answer.xml", tmp_path)
    call = call_alice(sipp, pbx_sipp.udp, tmp_path)
    b, a = busy.wait(), answers.wait()
    assert call.successful == 1, call.summary()
    assert b.successful == 1 and a.successful == 1, b.summary() + a.summary()
    # q=0.9 rang first; q=0.4 only after it (serially: the q=0.4 phone is
    # reached only because the first answered 480). Both are receive times:
    # SIPp stamps a message when it reads it, before it sends the 480, so
    # the order is causal. (A "message sent" stamp is taken after the send
    # and may lag the next hop's receipt under load.)
    t_first = b.received("^INVITE ")[0][0]
    t_second = a.received("^INVITE ")[0][0]
    assert t_first < t_second, (t_first, t_second)


def test_expired_binding_is_gone_480_for_invite_404_otherwise(pbx_sipp) -> None:
    phone = SipClient(pbx_sipp.udp, auth=("alice", "secret"))
    caller = SipClient(pbx_sipp.udp, user="bob")
    try:
        r = phone.register(expires=2)
        assert status_of(r) == 200 and "expires=2" in header(r, "Contact"), r
        # While registered, an INVITE to the AoR reaches the phone.
        aor = "sip:alice@127.0.0.1"
        sent = caller.build("INVITE", aor, to=aor)
        caller.sock.sendto(sent.data, pbx_sipp.udp)
        inv = phone.recv_request(5)
        assert inv is not None, "the INVITE did not reach the registered contact"
        assert inv.startswith(f"INVITE sip:alice@127.0.0.1:{phone.port} ".encode()), inv
        phone.reply_to(inv, 480, "Temporarily Unavailable")
        assert (phone.recv_request(5) or b"").startswith(b"ACK "), "no ACK for the 480"
        resp = caller.final(sent)
        assert status_of(resp) == 480
        caller.ack(sent, aor, resp)

        def gone() -> bool:
            return headers_all(phone.register([]), "Contact") == []

        wait_for(gone, 6, "alice's 2 s binding to expire", every=0.2)
        assert status_of(caller.invite("sip:alice@127.0.0.1")) == 480
        msg = caller.exchange(
            caller.build("MESSAGE", "sip:alice@127.0.0.1", to="sip:alice@127.0.0.1")
        )
        assert status_of(msg) == 404
    finally:
        phone.close()
        caller.close()


# 3 -- SQLite: bindings survive a restart -----------------------------------------


def test_sqlite_binding_survives_restart(
    sipp: str, sipr_factory, tmp_path: Path, sqlite_url: str
) -> None:
    env = pbx_env(tmp_path, sqlite_url, SIPR_DIGEST_ALGORITHMS="MD5,SHA-256", SIPR_AUTH_CALLS="0")
    first = sipr_factory(PBX, env=env)
    phone = free_port()
    reg = sipp_register(sipp, first.udp, phone, tmp_path)
    assert reg.successful == 1, reg.summary()
    assert first.stop() == 0, first.log()

    second = sipr_factory(PBX, env=env)  # other ports, same database
    assert second.udp != first.udp
    q = SipClient(second.udp, auth=("alice", "secret"), algorithm="SHA-256")
    try:
        listed = headers_all(q.register([]), "Contact")
        assert listed and f"sip:alice@127.0.0.1:{phone}" in listed[0], listed
    finally:
        q.close()
    callee = uas(sipp, phone, "uas_answer.xml", tmp_path)
    call = call_alice(sipp, second.udp, tmp_path)
    answered = callee.wait()
    assert call.successful == 1 and answered.successful == 1, call.summary() + answered.summary()


# 4 -- Redis: two instances share the location service ------------------------------


def test_redis_two_instances_share_bindings(
    sipp: str, sipr_factory, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    url = redis_server.url(0)
    add_user(url)
    env = pbx_env(tmp_path, url, SIPR_DIGEST_ALGORITHMS="MD5,SHA-256", SIPR_AUTH_CALLS="0")
    a = sipr_factory(PBX, env=env)
    b = sipr_factory(PBX, env=env)

    phone = free_port()
    reg = sipp_register(sipp, a.udp, phone, tmp_path)  # registered via A
    assert reg.successful == 1, reg.summary()
    callee = uas(sipp, phone, "uas_answer.xml", tmp_path)
    call = call_alice(sipp, b.udp, tmp_path)  # called via B
    answered = callee.wait()
    assert call.successful == 1 and answered.successful == 1, call.summary() + answered.summary()

    # Removed via B (Contact: *, Expires: 0) ...
    c = SipClient(b.udp, auth=("alice", "secret"), algorithm="SHA-256")
    try:
        r = c.register(["*"], expires=0)
        assert status_of(r) == 200 and headers_all(r, "Contact") == [], r
    finally:
        c.close()
    # ... gone on A.
    q = SipClient(a.udp, auth=("alice", "secret"), algorithm="MD5")
    caller = SipClient(a.udp, user="bob")
    try:
        assert headers_all(q.register([]), "Contact") == []
        assert status_of(caller.invite("sip:alice@127.0.0.1")) == 480
    finally:
        q.close()
        caller.close()
