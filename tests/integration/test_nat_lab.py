"""Issue 15, acceptance 1 and 2: real phones (baresip) behind two Linux NAT
routers (network namespaces, iptables MASQUERADE) register through sipr,
call each other with their media through the real rtpengine, and are kept
reachable by the core's NAT keepalives.

The NAT routers forget an idle UDP mapping after 30 s; sipr pings the
phones of `ping.example` every 20 s, those of `plain.example` not at all
(the control: its call at 60 s must not arrive, or the lab proves nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Sipr, start_sipr
from tests.integration.ctlkit import rpc
from tests.natlab import PHONE_IP, PROXY_IP, NatLab, available
from tests.netphone import NetPhone
from tests.rtpenginekit import RtpEngineProc

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "apps" / "nat_pbx.py"
UDP_TIMEOUT = 30
PING_INTERVAL = 20

_UNAVAILABLE = available()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))


class Lab:
    def __init__(self, net: NatLab, engine: RtpEngineProc, proxy: Sipr, tmp: Path) -> None:
        self.net, self.engine, self.proxy, self.tmp = net, engine, proxy, tmp
        self.phones: list[NetPhone] = []

    def phone(self, home: int, user: str, domain: str, port: int, answer: str) -> NetPhone:
        p = NetPhone(
            self.net.ua(home), user, domain, proxy=(PROXY_IP, 5060), workdir=self.tmp / user,
            ip=PHONE_IP, sip_port=port, answer=answer,
        )  # fmt: skip
        self.phones.append(p)
        p.start()
        p.wait_event("REGISTER_OK")
        return p

    def stats(self) -> dict[str, float]:
        return rpc(self.proxy.ctl, "stats.get")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    net = NatLab(homes=2, udp_timeout=UDP_TIMEOUT).start()
    engine = proxy = None
    try:
        engine = RtpEngineProc(30000, 2223, interface=PROXY_IP, netns=net.core).start()
        proxy = start_sipr(
            APP, listen=(f"udp:{PROXY_IP}:5060",), netns=net.core,
            env={"SIPR_RTPENGINE": engine.url, "SIPR_NATPING": str(PING_INTERVAL)},
        )  # fmt: skip
        lab = Lab(net, engine, proxy, tmp_path_factory.mktemp("natlab"))
        yield lab
        for p in lab.phones:
            p.stop()
    finally:
        if proxy is not None:
            proxy.stop()
        if engine is not None:
            engine.stop()
        net.close()


def until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def leg_packets(engine: RtpEngineProc, call_id: str) -> list[int]:
    """RTP packets rtpengine received on each leg (per From/To tag)."""
    q = engine.command({"command": "query", "call-id": call_id})
    out = []
    for tag in q[b"tags"].values():  # type: ignore[union-attr]
        n = 0
        for media in tag.get(b"medias", []):
            for stream in media.get(b"streams", []):
                n += stream.get(b"stats", {}).get(b"packets", 0)
        out.append(n)
    return out


def test_natted_phones_call_hear_each_other_and_sessions_end(lab: Lab) -> None:
    alice = lab.phone(1, "alice", "ping.example", 5060, "manual")
    bob = lab.phone(2, "bob", "ping.example", 5060, "manual")
    # Both phones are 192.168.1.10:5060; only their NATs tell them apart.
    alice.dial("sip:bob@ping.example")
    bob.wait_event("CALL_INCOMING")
    bob.accept()
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")
    (call_id,) = lab.engine.calls()
    start = (lab.net.rtp_packets_in(1), lab.net.rtp_packets_in(2))
    # Each phone hears the other: RTP arrives in both homes, through both
    # NATs, relayed by rtpengine (50 packets = 1 s of 20 ms G.711).
    until(
        "50 RTP packets into each home",
        lambda: (
            lab.net.rtp_packets_in(1) - start[0] >= 50
            and lab.net.rtp_packets_in(2) - start[1] >= 50
        ),
        timeout=15,
    )
    legs = leg_packets(lab.engine, call_id)
    assert len(legs) == 2 and min(legs) >= 50, legs
    homes = (lab.net.rtp_packets_in(1) - start[0], lab.net.rtp_packets_in(2) - start[1])
    print(f"RTP into home 1, home 2: {homes}; rtpengine per leg: {legs}")
    alice.hangup()
    alice.wait_event("CALL_CLOSED")
    bob.wait_event("CALL_CLOSED")
    until("rtpengine session deleted after BYE", lambda: lab.engine.calls() == [], timeout=5)

    # Busy: bob rejects (486), the session goes with the failure.
    alice.dial("sip:bob@ping.example")
    bob.wait_event("CALL_INCOMING")
    assert len(lab.engine.calls()) == 1
    bob.hangup()
    closed = alice.wait_event("CALL_CLOSED")
    assert "486" in str(closed.get("param")), closed
    assert lab.engine.calls() == []

    # Cancelled while ringing.
    alice.dial("sip:bob@ping.example")
    bob.wait_event("CALL_INCOMING")
    assert len(lab.engine.calls()) == 1
    alice.hangup()
    alice.wait_event("CALL_CLOSED")
    bob.wait_event("CALL_CLOSED")
    until("rtpengine session deleted after CANCEL", lambda: lab.engine.calls() == [], timeout=5)
    stats = lab.stats()
    assert stats["rtpengine.default.offers"] >= 3, stats
    assert stats["rtpengine.default.deletes"] >= 3, stats


def test_keepalive_keeps_a_natted_phone_reachable(lab: Lab) -> None:
    caller = lab.phones[0] if lab.phones else lab.phone(1, "alice", "ping.example", 5060, "manual")
    pinged = lab.phone(2, "dave", "ping.example", 5070, "auto")
    silent = lab.phone(2, "carol", "plain.example", 5080, "auto")
    registered = time.monotonic()
    public = lab.net.public_ip(2)
    # Carol's mapping is forgotten after 30 s of silence: the control.
    until(
        "carol's NAT mapping expired",
        lambda: not any("sport=5080" in m for m in lab.net.mappings(2)),
        timeout=UDP_TIMEOUT + 15,
    )
    time.sleep(max(0.0, registered + 60 - time.monotonic()))  # the call at 60 s

    caller.dial("sip:carol@plain.example")
    caller.wait_event("CALL_CLOSED", timeout=20)
    reached = silent.seen("CALL_INCOMING") or silent.seen("CALL_ESTABLISHED")
    assert not reached, f"carol was reached through {public} without a mapping"
    # Dave's mapping is there: sipr's pings kept it.
    assert any("sport=5070" in m for m in lab.net.mappings(2)), lab.net.mappings(2)

    caller.dial("sip:dave@ping.example")
    # Auto-answer: baresip reports the call established, no CALL_INCOMING.
    pinged.wait_event("CALL_ESTABLISHED", timeout=10)
    caller.wait_event("CALL_ESTABLISHED")
    caller.hangup()
    caller.wait_event("CALL_CLOSED")
    pinged.wait_event("CALL_CLOSED")
    stats = lab.stats()
    # Dave was pinged at least twice in those 60 s and answered.
    assert stats["nat.pings_sent"] >= 2, stats
    assert stats["nat.pings_answered"] >= 2, stats
    assert stats["nat.bindings"] >= 1, stats
    print({k: v for k, v in stats.items() if k.startswith("nat.")})
