"""Issue 17 acceptance 2: authentication-failure bans (fail2ban inside the
server), on the Python digest path and on the core's native REGISTER path.
SIPp and a Python UA answer the digest challenges from 127.0.0.x sources."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import free_port, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.regkit import SipClient, render
from tests.sipp.runner import Sipp, reap
from tests.sipp.securitykit import bans, log_lines, start, stats, wait_for

ATTACKER, ALICE_HOST = "127.0.0.6", "127.0.0.7"


@pytest.fixture(autouse=True)
def _reap():
    yield
    reap()


@pytest.fixture(params=["python", "native"])
def digest_path(request) -> str:
    return request.param


def client_at(host: str, server: tuple[str, int], **kw) -> SipClient:  # type: ignore[no-untyped-def]
    """A digest-answering UA (tests/sipp/regkit.py) bound to `host`."""
    c = SipClient(server, domain="sipr.test", **kw)
    c.sock.close()
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sock.bind((host, 0))
    c.port = c.sock.getsockname()[1]
    c.via_sent_by = f"{host}:{c.port}"
    return c


def register(host: str, server: tuple[str, int], password: str, user: str = "alice") -> int | None:
    c = client_at(host, server, user=user, auth=(user, password))
    try:
        contact = f"<sip:{user}@{host}:{c.port}>"
        return status_of(c.register([contact]))
    except AssertionError:
        return None  # no answer: dropped
    finally:
        c.close()


def test_wrong_passwords_ban_the_source_not_the_user(
    sipp: str, sipr_factory, tmp_path, digest_path
) -> None:
    sipr = start(
        sipr_factory,
        {"trusted": [], "target": "sip:x", "native_reg": digest_path == "native"},
    )
    wrong = render(
        "uac_register.xml", tmp_path, user="alice", password="guess", expect=403,
        expires=3600, q="1.0",
    )  # fmt: skip
    attack = Sipp(
        sipp, port=free_port(), scenario=wrong, remote=sipr.udp, calls=20, service="alice",
        workdir=tmp_path, extra=("-i", ATTACKER, "-recv_timeout", "1500"),
    ).wait()  # fmt: skip
    # Ten failures (the default) ban it: those ten got their 403, the rest nothing.
    assert attack.successful == 10 and attack.failed == 10, attack.summary()
    ban = bans(sipr)[ATTACKER]
    assert ban["reason"] == "auth" and "10 failed" in ban["detail"], ban
    assert ban["dropped"] > 0
    assert register(ATTACKER, sipr.udp, "alice-secret") is None, "banned: even alice's password"
    # alice from her own address, right password: registered.
    good = render(
        "uac_register.xml", tmp_path, user="alice", password="alice-secret", expect=200,
        expires=3600, q="1.0",
    )  # fmt: skip
    alice = Sipp(
        sipp, port=free_port(), scenario=good, remote=sipr.udp, calls=1, service="alice",
        workdir=tmp_path, extra=("-i", ALICE_HOST),
    ).wait()  # fmt: skip
    assert alice.successful == 1, alice.summary()
    s = stats(sipr, "security.")
    assert s["security.bans.auth"] == 1
    assert s["security.auth.failures"] == 10
    wait_for(lambda: log_lines(sipr, f"banned {ATTACKER} "), 5, "the ban log line")
    assert len(log_lines(sipr, f"banned {ATTACKER} ")) == 1


def test_user_lock_spares_the_owners_known_address(sipr_factory, digest_path) -> None:
    """Guesses for alice spread over four addresses (three each: no source
    reaches its ban threshold) lock alice, except from where she
    authenticated before; bob is not affected."""
    sipr = start(
        sipr_factory,
        {
            "trusted": [],
            "target": "sip:x",
            "native_reg": digest_path == "native",
            "auth": {"source_failures": 10, "user_failures": 12, "user_lock": 60},
        },
    )
    home = "127.0.0.20"
    assert register(home, sipr.udp, "alice-secret") == 200
    for i in range(4):
        for _ in range(3):
            assert register(f"127.0.0.{30 + i}", sipr.udp, "guess") == 403
    locks = wait_for(lambda: rpc(sipr.ctl, "auth.locks"), 5, "alice's lock")
    assert [lock["user"] for lock in locks] == ["alice@sipr.test"]
    assert not bans(sipr), "no single address reached its threshold"
    assert register(home, sipr.udp, "alice-secret") == 200, "alice's own phone is not locked out"
    assert register("127.0.0.40", sipr.udp, "alice-secret") == 403, "a new address is, for now"
    assert register("127.0.0.40", sipr.udp, "bob-secret", user="bob") == 200
    wait_for(lambda: log_lines(sipr, "locked user alice@sipr.test"), 5, "the lock log line")
    assert rpc(sipr.ctl, "auth.unlock", "alice@sipr.test")["unlocked"] is True
    assert register("127.0.0.40", sipr.udp, "alice-secret") == 200
    s = stats(sipr, "security.")
    assert s["security.auth.user_locks"] == 1 and s["security.auth.locked_refusals"] == 1
