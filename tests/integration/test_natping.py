"""NAT keepalives (issue 15, `sipr.nat.keepalive`) on 127.0.0.1: a phone
whose Via names a private address is registered with a `received`
address and gets OPTIONS from the proxy's own socket every interval; over
TCP it gets CRLF CRLF on its connection; one that stops answering is
dropped after `drop_after` misses. The NAT lab (test_nat_lab.py) shows
the pings keeping a real NAT mapping open."""

from __future__ import annotations

import itertools
import socket
import time

from tests.conftest import ROOT, UdpPeer, sip_answer, sip_request, status_of
from tests.integration.ctlkit import rpc

APP = ROOT / "tests" / "apps" / "natping_app.py"
INTERVAL = 1.0


def register(port: int, transport: str = "UDP") -> bytes:
    # The phone says it is 192.168.1.10:5060: behind NAT.
    return sip_request(
        "REGISTER", "sip:127.0.0.1", port=port,
        via=f"SIP/2.0/{transport} 192.168.1.10:5060;branch=z9hG4bK{{branch}};rport",
        extra="To: <sip:phone@127.0.0.1>\r\nContact: <sip:phone@192.168.1.10:5060>\r\n"
        "Expires: 3600\r\n",
    ).replace(b"To: <sip:127.0.0.1>\r\n", b"")  # fmt: skip


def bindings(proxy) -> int:
    return sum(len(r["contacts"]) for r in rpc(proxy.ctl, "ul.dump"))


def test_udp_pings_answered_then_dropped_when_silent(sipr_factory) -> None:
    proxy = sipr_factory(APP, env={"SIPR_NATPING": str(INTERVAL), "SIPR_DROP_AFTER": "2"})
    # Unanswered pings fail at Timer F = 64 * T1: 0.64 s here.
    rpc(proxy.ctl, "cfg.set", "tm.t1", "0.01")
    phone = UdpPeer()
    try:
        phone.send(register(phone.port), proxy.udp)
        assert status_of(phone.recv(5.0)) == 200
        # Answered pings: OPTIONS from the proxy's listening socket, to the
        # registered Contact, one per interval.
        arrivals = []
        while len(arrivals) < 3:
            data, src = phone.sock.recvfrom(65535)
            assert src == proxy.udp, src
            assert data.startswith(b"OPTIONS sip:phone@192.168.1.10:5060 SIP/2.0"), data
            if not arrivals or time.monotonic() - arrivals[-1] > 0.3:  # not a retransmission
                arrivals.append(time.monotonic())
            phone.send(sip_answer(data, 200, "OK", "ph"), proxy.udp)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert all(0.5 * INTERVAL < g < 2 * INTERVAL for g in gaps), gaps
        stats = rpc(proxy.ctl, "stats.get")
        assert stats["nat.bindings"] == 1, stats
        assert stats["nat.pings_answered"] >= 2, stats
        assert stats["nat.dropped"] == 0 and bindings(proxy) == 1
        shown = rpc(proxy.ctl, "nat.show")
        assert shown["interval"] == INTERVAL and shown["drop_after"] == 2, shown
        (row,) = shown["bindings"]
        assert (row["transport"], row["address"]) == ("udp", f"127.0.0.1:{phone.port}"), row
        assert row["contact"] == "sip:phone@192.168.1.10:5060" and row["misses"] == 0, row
        # Silent from now on: two misses in a row drop the binding.
        deadline = time.monotonic() + 6 * INTERVAL
        while rpc(proxy.ctl, "stats.get")["nat.dropped"] < 1:
            assert time.monotonic() < deadline, rpc(proxy.ctl, "stats.get")
            time.sleep(0.1)
        stats = rpc(proxy.ctl, "stats.get")
        assert stats["nat.pings_failed"] >= 2, stats
        assert bindings(proxy) == 0
    finally:
        phone.close()


def test_tcp_binding_gets_crlf_keepalives(sipr_factory) -> None:
    proxy = sipr_factory(APP, env={"SIPR_NATPING": str(INTERVAL)})
    with socket.create_connection(proxy.tcp, timeout=5) as conn:
        port = conn.getsockname()[1]
        conn.sendall(register(port, "TCP"))
        got = b""
        while b"\r\n\r\n" not in got:
            got += conn.recv(65535)
        assert got.startswith(b"SIP/2.0 200"), got
        rest = got.split(b"\r\n\r\n", 1)[1]
        # Nothing but CRLF CRLF keepalives come on this connection, two of them
        # within two intervals and a bit.
        conn.settimeout(2 * INTERVAL + 1)
        while rest.count(b"\r\n\r\n") < 2:
            chunk = conn.recv(65535)
            assert chunk, "connection closed"
            rest += chunk
        assert set(rest) <= {13, 10}, rest
    stats = rpc(proxy.ctl, "stats.get")
    assert stats["nat.pings_sent"] >= 2, stats
