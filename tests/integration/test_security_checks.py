"""Issue 17: the sanity checklist the core applies before Python when the
app asks (Kamailio `sanity`), the blocklist left to the route, bans on
stream transports, reloads that change the security settings, and a bad
setting refused at start with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import header, sip_request, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.securitykit import APP, UdpFrom, start, stats

SOURCE = "127.0.0.12"


def ask_raw(ua: UdpFrom, to: tuple[str, int], data: bytes) -> bytes | None:
    ua.sock.sendto(data, to)
    return ua.recv(2.0)


def test_sanity_checks_answer_before_python(sipr_factory) -> None:
    sipr = start(sipr_factory, {"target": "sip:x", "sanity": True})
    ua = UdpFrom(SOURCE)
    try:
        uri = f"sip:probe@{sipr.udp[0]}:{sipr.udp[1]}"

        via = f"SIP/2.0/UDP {SOURCE}:{{port}};branch=z9hG4bK{{branch}}"

        def req(**kw) -> bytes:  # type: ignore[no-untyped-def]
            kw.setdefault("uri", uri)
            return sip_request("OPTIONS", port=ua.port, via=via, **kw)

        assert status_of(ask_raw(ua, sipr.udp, req())) == 200  # the route answers
        refused = ask_raw(ua, sipr.udp, req(extra="Proxy-Require: foo\r\n"))
        assert status_of(refused) == 420 and header(refused, "Unsupported") == "foo"
        assert status_of(ask_raw(ua, sipr.udp, req(uri="tel:+15551234"))) == 416
        cseq = req().replace(b"CSeq: 1 OPTIONS", b"CSeq: 3000000000 OPTIONS")
        assert status_of(ask_raw(ua, sipr.udp, cseq)) == 400
        # Content-Length: 0 but a body arrived with the datagram.
        trailing = req() + b"v=0\r\n"
        assert status_of(ask_raw(ua, sipr.udp, trailing)) == 400
        assert stats(sipr, "security.")["security.sanity_refused"] == 4
    finally:
        ua.close()


def test_without_sanity_the_route_decides(sipr_factory) -> None:
    sipr = start(sipr_factory, {"target": "sip:x"})
    ua = UdpFrom(SOURCE)
    try:
        extra = "Proxy-Require: foo\r\n"
        assert ua.ask(sipr.udp, "OPTIONS", extra=extra) == 200
        assert stats(sipr, "security.")["security.sanity_refused"] == 0
    finally:
        ua.close()


def test_blocklist_left_to_the_route_and_bans_on_tcp(sipr_factory) -> None:
    sipr = start(
        sipr_factory,
        {"trusted": [], "target": "sip:x", "blocklist": {"action": "route"}},
    )
    ua = UdpFrom(SOURCE)
    try:
        # action="route": the core lets the scanner's request through.
        assert ua.ask(sipr.udp, "OPTIONS", extra="User-Agent: friendly-scanner\r\n") == 200
        assert stats(sipr, "security.")["security.blocklist_drops"] == 0
    finally:
        ua.close()
    assert rpc(sipr.ctl, "ban.add", SOURCE, 30)["new"] is True
    with socket.socket() as s:
        s.bind((SOURCE, 0))
        s.settimeout(1.0)
        s.connect(sipr.tcp)
        port = s.getsockname()[1]
        via = f"SIP/2.0/TCP {SOURCE}:{{port}};branch=z9hG4bK{{branch}}"
        s.sendall(sip_request("OPTIONS", f"sip:x@{sipr.tcp[0]}", port=port, via=via))
        try:
            got = s.recv(65535)
        except TimeoutError:
            got = b""
    assert got == b"", "a banned source got an answer over TCP"
    assert rpc(sipr.ctl, "ban.list")[0]["dropped"] == 1


def test_bad_security_setting_is_one_line(tmp_path) -> None:
    env = {
        **os.environ,
        "SIPR_RUN_DIR": str(tmp_path),
        "SIPR_SECURITY": '{"flood": {"limit": 0}}',
    }
    p = subprocess.run(
        [sys.executable, "-m", "sipr", "run", str(APP), "--listen", "udp:127.0.0.1:0"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "flood.limit" in lines[0], p.stderr
