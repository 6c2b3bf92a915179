"""Acceptance (issue 12, points 4-6): edge behaviour operators expect.

4. force_rport (RFC 3581 §4, Kamailio's force_rport()): a UDP request whose
   Via names another port and asks no rport is answered at its source port
   with `App(force_rport=True)` or `req.force_rport()`, at the sent-by port
   otherwise; a call from such a phone completes through a stateful relay.
5. Stray responses: a forged response (our address in the top Via, a branch
   we did not mint for that upstream) goes nowhere and is counted; a genuine
   response to a stateless forward is relayed even after sipr restarted.
6. A request without Content-Length over TCP or TLS: 400, connection closed.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    UdpPeer,
    free_port,
    header,
    sip_answer,
    sip_request,
    start_sipr,
    status_of,
)
from tests.integration.ctlkit import rpc
from tests.sipp.peers import Sipp
from tests.sipp.regkit import wait_for
from tests.tls_peers import CertAuthority, SipConnection, client_context

EDGE_APP = ROOT / "tests" / "apps" / "edge_app.py"


def natted_options(user: str, source: UdpPeer, claimed: UdpPeer) -> bytes:
    """An OPTIONS sent from `source` whose Via names `claimed`'s port, no rport."""
    via = "SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}"
    return sip_request(uri=f"sip:{user}@127.0.0.1", via=via, port=claimed.port)


# 4 -- force_rport ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["app", "request", "off"])
def test_force_rport_answers_at_the_source_port(sipr_factory, mode: str) -> None:
    env = {"SIPR_FORCE_RPORT": "1" if mode == "app" else "0"}
    proxy = sipr_factory(EDGE_APP, env=env)
    source, claimed = UdpPeer(), UdpPeer()
    try:
        user = "rport" if mode == "request" else "ping"
        source.send(natted_options(user, source, claimed), proxy.udp)
        if mode == "off":
            # RFC 3261 §18.2.2: no rport, so the port of sent-by.
            resp = claimed.recv()
            assert status_of(resp) == 200, resp
            via = header(resp, "Via") or ""
            assert "rport" not in via and f"127.0.0.1:{claimed.port};" in via
            assert source.recv(timeout=0.3) is None
            return
        resp = source.recv()
        assert status_of(resp) == 200, resp
        via = header(resp, "Via") or ""
        assert f";rport={source.port}" in via and ";received=127.0.0.1" in via, via
        assert claimed.recv(timeout=0.3) is None
    finally:
        source.close()
        claimed.close()


@pytest.mark.sipp
def test_call_from_a_phone_behind_nat_through_a_force_rport_relay(sipp: str, sipr_factory) -> None:
    """SIPp's Vias name port 9 (nothing listens) without rport: every answer,
    relayed from the callee along the stamped Via, must reach its real port."""
    uas_port, uac_port = free_port(), free_port()
    proxy = sipr_factory(
        EDGE_APP, env={"SIPR_FORCE_RPORT": "1", "SIPR_TARGET": f"sip:127.0.0.1:{uas_port}"}
    )
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=1, timeout_s=20, extra=("-trace_msg",))
    uac = Sipp(sipp, "uac_rr_natted.xml", uac_port, calls=1, remote=proxy.udp, timeout_s=20)
    called, answered = uac.wait(), uas.wait()
    assert called.successful == 1 and called.failed == 0, called.summary()
    assert answered.successful == 1, answered.summary()
    # What the callee got: the caller's Via stamped by the proxy.
    received = "".join(log.read_text() for log in uas.workdir.glob("*_messages.log"))
    invite = received.split("INVITE sip:", 1)[1]
    stamped = re.search(r"Via: SIP/2.0/UDP 127.0.0.1:9;branch=\S+", invite)
    assert stamped and f"rport={uac_port}" in stamped.group(0), invite[:1500]


# 5 -- stray responses --------------------------------------------------------------


def stray_count(ctl: Path) -> int:
    return int(rpc(ctl, "stats.get", "core.stray")["core.stray_responses"])


def test_forged_response_is_dropped_and_counted(sipr_factory) -> None:
    victim, caller, downstream = UdpPeer(), UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            EDGE_APP,
            env={"SIPR_STATELESS": "1", "SIPR_TARGET": f"sip:127.0.0.1:{downstream.port}"},
        )
        ours = f"SIP/2.0/UDP {proxy.udp[0]}:{proxy.udp[1]}"
        to_victim = f"SIP/2.0/UDP 127.0.0.1:{victim.port};rport={victim.port}"

        def forged(branch: str, second: str) -> bytes:
            return (
                f"SIP/2.0 200 OK\r\nVia: {ours};branch={branch}\r\nVia: {second}\r\n"
                "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: forged\r\n"
                "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ).encode()

        # A branch sipr never minted.
        victim.send(forged(f"z9hG4bK{os.urandom(8).hex()}", to_victim), proxy.udp)
        assert wait_for(lambda: stray_count(proxy.ctl) == 1, 5, "the stray count")
        # A genuine branch, lifted from a forwarded request, aimed elsewhere.
        caller.send(sip_request(uri="sip:bob@127.0.0.1", port=caller.port), proxy.udp)
        forwarded = downstream.recv()
        assert forwarded is not None
        branch = re.search(rb"branch=(z9hG4bK[^;\r]+)", forwarded).group(1).decode()  # type: ignore[union-attr]
        victim.send(forged(branch, to_victim), proxy.udp)
        assert wait_for(lambda: stray_count(proxy.ctl) == 2, 5, "the stray count")
        # Dropped silently: the victim got nothing, nobody was answered.
        assert victim.recv(timeout=0.3) is None
        stats = rpc(proxy.ctl, "stats.get", "core.responses_relayed")
        assert stats["core.responses_relayed"] == 0
        # The genuine response to the same request still goes through.
        downstream.send(sip_answer(forwarded, 200, "OK", "b1"), proxy.udp)
        resp = caller.recv()
        assert status_of(resp) == 200 and b"tag=b1" in resp, resp
        metrics = rpc(proxy.ctl, "stats.get", "core.stray")
        assert metrics == {"core.stray_responses": 2}
    finally:
        for p in (victim, caller, downstream):
            p.close()


def test_response_to_a_stateless_forward_is_relayed_after_a_restart(tmp_path: Path) -> None:
    """The branch key outlives the process (run directory), so a response to a
    request forwarded just before a restart still finds its way back."""
    caller, downstream = UdpPeer(), UdpPeer()
    port = free_port()
    env = {
        "SIPR_RUN_DIR": str(tmp_path / "run"),
        "SIPR_STATELESS": "1",
        "SIPR_TARGET": f"sip:127.0.0.1:{downstream.port}",
    }
    listen = (f"udp:127.0.0.1:{port}",)
    first = start_sipr(EDGE_APP, listen=listen, env=env)
    try:
        caller.send(sip_request(uri="sip:bob@127.0.0.1", port=caller.port), first.udp)
        forwarded = downstream.recv()
        assert forwarded is not None
    finally:
        assert first.stop() == 0, first.log()
    key = tmp_path / "run" / "branch.key"
    assert key.stat().st_mode & 0o777 == 0o600
    second = start_sipr(EDGE_APP, listen=listen, env=env)
    try:
        downstream.send(sip_answer(forwarded, 200, "OK", "b2"), second.udp)
        resp = caller.recv()
        assert status_of(resp) == 200 and b"tag=b2" in resp, resp
        assert rpc(second.ctl, "stats.get", "core.")["core.stray_responses"] == 0
    finally:
        assert second.stop() == 0, second.log()
        caller.close()
        downstream.close()


# 6 -- streams without Content-Length ------------------------------------------------


def without_content_length(port: int) -> bytes:
    req = sip_request(
        uri="sip:ping@127.0.0.1",
        via="SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}",
        port=port,
    )
    return req.replace(b"Content-Length: 0\r\n", b"")


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_stream_request_without_content_length_is_400_and_closed(
    sipr_factory, tmp_path: Path, transport: str
) -> None:
    ca = CertAuthority(tmp_path)
    files = ca.issue("sipr", dns=("sipr.test",), stem="sipr")
    proxy = sipr_factory(
        EDGE_APP,
        listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"),
        extra_args=("--tls-cert", str(files.cert), "--tls-key", str(files.key)),
    )
    ctx: ssl.SSLContext | None = client_context(ca.pem) if transport == "tls" else None
    conn = SipConnection.open(proxy.addrs[transport], ctx, server_hostname="sipr.test")
    try:
        conn.send(without_content_length(conn.local_port))
        resp = conn.recv()
        assert status_of(resp) == 400 and b"Content-Length" in resp.split(b"\r\n", 1)[0], resp
        assert conn.recv(timeout=5) is None and conn.closed  # closed by sipr
    finally:
        conn.close()
    # The same request with Content-Length is answered 200 on a new connection.
    conn = SipConnection.open(proxy.addrs[transport], ctx, server_hostname="sipr.test")
    try:
        ok = without_content_length(conn.local_port).replace(
            b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"
        )
        conn.send(ok)
        assert status_of(conn.recv()) == 200
    finally:
        conn.close()
