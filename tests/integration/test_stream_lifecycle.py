"""Stream connection lifecycle (issue 6): connect failures and timeouts fail
the branch at once (RFC 3261 §8.1.3.1), idle lifetime, CRLF keep-alive
(RFC 5626 §4.4.1), the connection bound, and `Core.tls_info()`."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, UdpPeer, free_port, sip_request, status_of
from tests.sipp.peers import sipr_stats
from tests.tls_peers import CertAuthority, SipConnection

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
FLOW_REGISTRAR = ROOT / "tests" / "apps" / "flow_registrar.py"
# Timer B / F with the default T1: a final answer well before it comes from
# the transport error, not from the transaction timing out.
WELL_BEFORE_TIMER_B = 10.0


def final_status_over_udp(proxy_udp: tuple[str, int]) -> int:
    peer = UdpPeer()
    try:
        uri = f"sip:bob@{proxy_udp[0]}:{proxy_udp[1]}"
        peer.send(sip_request("INVITE", uri, port=peer.port), proxy_udp)
        while True:
            status = status_of(peer.recv(timeout=WELL_BEFORE_TIMER_B))
            assert status is not None, "no final response before Timer B"
            if status >= 200:
                return status
    finally:
        peer.close()


def tcp_options(conn: SipConnection, addr: tuple[str, int]) -> int | None:
    return status_of(conn.options(addr, "stats", "TCP"))


def test_refused_tcp_connect_fails_the_branch_at_once(sipr_factory) -> None:
    closed = free_port(socket.SOCK_STREAM)
    proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{closed};transport=tcp"})
    assert final_status_over_udp(proxy.udp) in (500, 503)


def test_after_a_refused_connect_the_next_ones_fail_at_once(sipr_factory) -> None:
    """A connect refused: for connect_backoff (2 s) messages to that address
    fail at once instead of each trying a connect of its own (the flood of
    connect attempts that answers to a client gone away used to make)."""
    closed = free_port(socket.SOCK_STREAM)
    proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{closed};transport=tcp"})
    started = time.monotonic()
    statuses = [final_status_over_udp(proxy.udp) for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(s in (500, 503) for s in statuses), statuses
    stats = sipr_stats(proxy.tcp)
    failed, held_back = stats["connects_failed"], stats["connects_held_back"]
    assert failed + held_back == 10, stats
    # One connect per 2 s window at most; without the back-off all 10 connect.
    assert 1 <= failed <= 1 + int(elapsed / 2.0), (failed, elapsed)


def test_tls_handshake_that_never_answers_times_out(sipr_factory, tmp_path: Path) -> None:
    """The peer accepts TCP but never speaks TLS: the connect timeout (1 s)
    ends the branch, long before Timer B."""
    ca = CertAuthority(tmp_path)
    cert = ca.issue("sipr")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"sip:127.0.0.1:{silent.getsockname()[1]};transport=tls"
        proxy = sipr_factory(
            PROXY,
            env={"SIPR_TARGETS": target},
            extra_args=(
                "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                "--tls-ca", str(ca.pem), "--tcp-connect-timeout", "1",
            ),
        )  # fmt: skip
        assert final_status_over_udp(proxy.udp) in (500, 503)


def test_crlf_ping_is_answered_with_crlf(sipr_factory) -> None:
    proxy = sipr_factory(PROXY)
    with socket.create_connection(proxy.tcp, timeout=5) as s:
        s.sendall(b"\r\n\r\n")
        assert s.recv(16) == b"\r\n"


def test_idle_connection_is_closed_after_its_lifetime(sipr_factory) -> None:
    proxy = sipr_factory(PROXY, extra_args=("--tcp-connection-lifetime", "1"))
    conn = SipConnection.open(proxy.tcp, None)
    assert tcp_options(conn, proxy.tcp) == 200
    # Bounded wait for the server's close (lifetime 1 s, checked per second).
    deadline = time.monotonic() + 10
    while not conn.closed and time.monotonic() < deadline:
        assert conn.recv(timeout=1.0) is None
    assert conn.closed, "the idle connection stayed open"
    conn.close()


def test_connections_beyond_the_bound_are_refused(sipr_factory) -> None:
    proxy = sipr_factory(PROXY, extra_args=("--max-connections", "2"))
    first = [SipConnection.open(proxy.tcp, None) for _ in range(2)]
    for c in first:
        assert tcp_options(c, proxy.tcp) == 200
    extra = SipConnection.open(proxy.tcp, None)
    assert tcp_options(extra, proxy.tcp) is None and extra.closed
    extra.close()
    first[0].close()
    # The freed slot is reusable once the proxy has seen the close.
    deadline = time.monotonic() + 10
    status = None
    while status != 200 and time.monotonic() < deadline:
        again = SipConnection.open(proxy.tcp, None)
        status = tcp_options(again, proxy.tcp)
        again.close()
    assert status == 200
    assert tcp_options(first[1], proxy.tcp) == 200
    first[1].close()


@pytest.mark.parametrize("with_sni", [False, True])
def test_tls_info_lists_listeners_and_certificates(
    sipr_factory, tmp_path: Path, with_sni: bool
) -> None:
    ca = CertAuthority(tmp_path)
    cert = ca.issue("sipr", dns=("sipr.test",))
    args = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    if with_sni:
        other = ca.issue("sip.example.org", dns=("sip.example.org",), ips=())
        args += ["--tls-sni", f"sip.example.org={other.cert},{other.key}"]
    proxy = sipr_factory(
        FLOW_REGISTRAR,
        listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"),
        extra_args=tuple(args),
    )
    conn = SipConnection.open(proxy.tcp, None)
    resp = conn.options(proxy.tcp, "tlsinfo", "TCP")
    conn.close()
    assert status_of(resp) == 200 and resp is not None
    info = json.loads(resp.split(b"\r\n\r\n", 1)[1])
    assert info["listeners"] == [list(proxy.addrs["tls"])]
    certs = info["certificates"]
    assert len(certs) == (2 if with_sni else 1)
    default = certs[0]
    assert default["domain"] is None and default["subject"] == "CN=sipr"
    assert default["issuer"] == "CN=sipr test CA"
    assert set(default["names"]) == {"sipr.test", "127.0.0.1"}
    assert default["not_after"] > time.time()
    if with_sni:
        assert certs[1]["domain"] == "sip.example.org"
        assert certs[1]["subject"] == "CN=sip.example.org"
