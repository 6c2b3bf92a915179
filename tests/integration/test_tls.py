"""TLS transport (issue 6): calls over TLS with a CA made by the tests, mTLS,
SNI, protocol floor, certificate reload, outgoing peer verification, and
UDP ↔ TLS translation with double Record-Route."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import LISTEN_RE, ROOT, UdpPeer, free_port, header, sip_request, status_of
from tests.sipp.runner import Sipp
from tests.tls_peers import (
    CertAuthority,
    SipConnection,
    TlsClientUa,
    TlsUas,
    UasLog,
    client_context,
    headers_of,
)

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
FLOW_REGISTRAR = ROOT / "tests" / "apps" / "flow_registrar.py"
LISTEN = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0")


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path)


def tls_args(ca: CertAuthority, *extra: str, name: str = "sipr") -> tuple[str, ...]:
    files = ca.issue(name, dns=("sipr.test",), stem=name)
    return (
        "--tls-cert",
        str(files.cert),
        "--tls-key",
        str(files.key),
        "--tls-ca",
        str(ca.pem),
        *extra,
    )


def start_proxy(
    sipr_factory, ca: CertAuthority, *extra: str, targets: str = "", name: str = "sipr"
):
    env = {"SIPR_TARGETS": targets} if targets else {}
    return sipr_factory(PROXY, listen=LISTEN, env=env, extra_args=tls_args(ca, *extra, name=name))


def options(conn: SipConnection, addr: tuple[str, int]) -> bytes | None:
    """OPTIONS sip:stats@ over `conn`; the final response or None."""
    return conn.options(addr, "stats", "TLS")


def refused_without_certificate(addr: tuple[str, int], ca_pem: Path) -> bool:
    """Whether a client without a certificate gets no SIP answer from `addr`."""
    try:
        conn = SipConnection.open(addr, client_context(ca_pem))
        # TLS 1.3: the client's handshake ends before the server has checked
        # it; the refusal arrives as an alert on the first read.
        answer = options(conn, addr)
        conn.close()
    except ssl.SSLError:
        return True
    return answer is None


def peer_common_name(conn: SipConnection) -> str:
    cert = conn.sock.getpeercert()  # type: ignore[attr-defined]
    assert cert, "no peer certificate"
    return dict(x[0] for x in cert["subject"])["commonName"]


def in_dialog(method: str, invite: bytes, final: bytes, cseq: int, port: int) -> bytes:
    """ACK or BYE for the dialog of `invite`/`final` (RFC 3261 §12.2.1.1):
    R-URI = the remote Contact, Route = the Record-Route set reversed."""
    contact = header(final, "Contact")
    assert contact, final
    target = contact.strip("<>").split(">")[0]
    rr = [v for k, v in headers_of(final) if k.lower() == "record-route"]
    routes = [r.strip() for value in rr for r in value.split(",")][::-1]
    route = "".join(f"Route: {r}\r\n" for r in routes)
    branch = os.urandom(6).hex()
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
        f"{route}"
        f"Max-Forwards: 70\r\n"
        f"From: {header(invite, 'From')}\r\n"
        f"To: {header(final, 'To')}\r\n"
        f"Call-ID: {header(invite, 'Call-ID')}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def sipp_calls(sipp: str, proxy_udp: tuple[str, int], calls: int, callee: UasLog) -> None:
    """`calls` SIPp UDP calls honouring Record-Route, all completed, all
    ACKed at the callee."""
    uac = Sipp(
        sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy_udp, rate=10, timeout_s=60
    )
    r = uac.wait()
    assert (r.successful, r.failed) == (calls, 0), r.summary()
    assert wait_for(lambda: callee.count("ACK") == calls), callee.methods


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# Acceptance 1 --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["sip", "sips"])
def test_call_over_tls_from_tls_uac_to_tls_uas(
    sipr_factory, ca: CertAuthority, scheme: str
) -> None:
    """INVITE/200/ACK/BYE/200 with TLS on both sides: the proxy verifies the
    UAS against the test CA, the UAC verifies the proxy. For a `sips:`
    Request-URI our Record-Route is a SIPS URI (RFC 3261 §16.6 step 4)."""
    uas = TlsUas(ca.issue("uas"))
    try:
        proxy = start_proxy(sipr_factory, ca, targets=f"sip:127.0.0.1:{uas.port};transport=tls")
        tls_addr = proxy.addrs["tls"]
        conn = SipConnection.open(tls_addr, client_context(ca.pem))
        assert peer_common_name(conn) == "sipr"
        port = conn.local_port
        invite = sip_request(
            "INVITE",
            f"{scheme}:bob@{tls_addr[0]}:{tls_addr[1]}",
            via="SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK{branch}",
            port=port,
            extra=f"Contact: <sip:alice@127.0.0.1:{port};transport=tls>\r\n",
        )
        conn.send(invite)
        final = conn.recv_final()
        assert status_of(final) == 200, final
        assert final is not None
        rr = header(final, "Record-Route")
        expected = (
            f"<sips:127.0.0.1:{tls_addr[1]};lr>"
            if scheme == "sips"
            else f"<sip:127.0.0.1:{tls_addr[1]};transport=tls;lr>"
        )
        assert rr == expected, final
        conn.send(in_dialog("ACK", invite, final, 1, port))
        conn.send(in_dialog("BYE", invite, final, 2, port))
        bye_final = conn.recv_final()
        assert status_of(bye_final) == 200, bye_final
        assert wait_for(lambda: uas.log.count("ACK") == 1), uas.log.methods
        assert uas.log.methods == ["INVITE", "ACK", "BYE"]
        via = header(uas.log.invites[0], "Via")
        assert via is not None and via.startswith("SIP/2.0/TLS "), via
        conn.close()
    finally:
        uas.stop()


def test_mtls_refuses_a_client_without_certificate(sipr_factory, ca: CertAuthority) -> None:
    proxy = start_proxy(sipr_factory, ca, "--tls-client-ca", str(ca.pem), "--tls-verify-client")
    addr = proxy.addrs["tls"]
    assert refused_without_certificate(addr, ca.pem)
    client = ca.issue("alice", ips=(), client=True)
    conn = SipConnection.open(addr, client_context(ca.pem, client))
    assert status_of(options(conn, addr)) == 200
    conn.close()


def test_mtls_on_one_listener_only(sipr_factory, ca: CertAuthority) -> None:
    """`--tls-verify-client-on` requires client certificates on that TLS
    listener; the process's other TLS listener still takes any client."""
    strict_port = free_port(socket.SOCK_STREAM)
    proxy = sipr_factory(
        PROXY,
        listen=("udp:127.0.0.1:0", f"tls:127.0.0.1:{strict_port}"),
        extra_args=(
            "--listen", "tls:127.0.0.1:0",
            *tls_args(ca, "--tls-client-ca", str(ca.pem)),
            "--tls-verify-client-on", f"127.0.0.1:{strict_port}",
        ),
    )  # fmt: skip
    tls_ports = {
        int(m.group(3))
        for line in proxy.output
        if (m := LISTEN_RE.search(line)) and m.group(1) == "tls"
    }
    (open_port,) = tls_ports - {strict_port}
    strict, relaxed = ("127.0.0.1", strict_port), ("127.0.0.1", open_port)
    assert refused_without_certificate(strict, ca.pem)
    conn = SipConnection.open(relaxed, client_context(ca.pem))
    assert status_of(options(conn, relaxed)) == 200
    conn.close()
    client = ca.issue("alice", ips=(), client=True)
    conn = SipConnection.open(strict, client_context(ca.pem, client))
    assert status_of(options(conn, strict)) == 200
    conn.close()


def test_sni_picks_the_domain_certificate(sipr_factory, ca: CertAuthority) -> None:
    other = ca.issue("sip.example.org", dns=("sip.example.org",), ips=())
    proxy = start_proxy(sipr_factory, ca, "--tls-sni", f"sip.example.org={other.cert},{other.key}")
    addr = proxy.addrs["tls"]
    ctx = client_context(ca.pem)
    with_sni = SipConnection.open(addr, ctx, server_hostname="sip.example.org")
    assert peer_common_name(with_sni) == "sip.example.org"
    with_sni.close()
    default = SipConnection.open(addr, ctx, server_hostname="unknown.example.org")
    assert peer_common_name(default) == "sipr"
    assert status_of(options(default, addr)) == 200
    default.close()


def test_tls_below_1_2_is_refused(sipr_factory, ca: CertAuthority) -> None:
    proxy = start_proxy(sipr_factory, ca)
    addr = proxy.addrs["tls"]
    with pytest.raises(ssl.SSLError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = ssl.TLSVersion.TLSv1_1
        SipConnection.open(addr, client_context(ca.pem, max_version=old))
    tls12 = SipConnection.open(addr, client_context(ca.pem, max_version=ssl.TLSVersion.TLSv1_2))
    assert tls12.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
    assert status_of(options(tls12, addr)) == 200
    tls12.close()


def test_certificate_reload_keeps_open_connections(sipr_factory, ca: CertAuthority) -> None:
    proxy = start_proxy(sipr_factory, ca, name="first")
    addr = proxy.addrs["tls"]
    ctx = client_context(ca.pem)
    old = SipConnection.open(addr, ctx)
    assert peer_common_name(old) == "first"
    assert status_of(options(old, addr)) == 200
    # Same paths, new contents: what an operator's certificate renewal does.
    renewed = ca.issue("second", stem="renewed")
    running = ca.files("first")
    running.cert.write_bytes(renewed.cert.read_bytes())
    running.key.write_bytes(renewed.key.read_bytes())
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "sipr: TLS certificates reloaded" in proxy.log()), proxy.log()
    new = SipConnection.open(addr, ctx)
    assert peer_common_name(new) == "second"
    assert status_of(options(new, addr)) == 200
    # The connection opened before the reload still carries requests.
    assert status_of(options(old, addr)) == 200
    old.close()
    new.close()


def test_failed_reload_keeps_the_running_certificate(sipr_factory, ca: CertAuthority) -> None:
    proxy = start_proxy(sipr_factory, ca, name="kept")
    addr = proxy.addrs["tls"]
    key = ca.files("kept").key
    key.write_text("not a key\n")
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "TLS reload failed, keeping the old certificates" in proxy.log())
    assert str(key) in proxy.log()
    conn = SipConnection.open(addr, client_context(ca.pem))
    assert peer_common_name(conn) == "kept"
    assert status_of(options(conn, addr)) == 200
    conn.close()
    assert proxy.alive()


def test_outgoing_tls_to_untrusted_server_fails_fast(
    sipr_factory, ca: CertAuthority, tmp_path
) -> None:
    """The UAS's certificate is from a CA the proxy does not trust: the
    handshake fails, the branch fails at once with a 5xx, long before Timer B."""
    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    rogue = CertAuthority(rogue_dir, name="rogue CA")
    uas = TlsUas(rogue.issue("uas"))
    peer = UdpPeer()
    try:
        proxy = start_proxy(sipr_factory, ca, targets=f"sip:127.0.0.1:{uas.port};transport=tls")
        udp = proxy.addrs["udp"]
        peer.send(sip_request("INVITE", f"sip:bob@{udp[0]}:{udp[1]}", port=peer.port), udp)
        status = None
        while status is None or status < 200:
            # Timer B is 32 s: a final within 10 s comes from the transport error.
            status = status_of(peer.recv(timeout=10.0))
            assert status is not None, "no final response"
        assert status in (500, 503), status
        assert uas.log.methods == []
    finally:
        peer.close()
        uas.stop()


# Acceptance 2 --------------------------------------------------------------


def test_udp_caller_to_tls_callee_with_double_record_route(
    sipp: str, sipr_factory, ca: CertAuthority
) -> None:
    calls = 20
    uas = TlsUas(ca.issue("uas"))
    try:
        proxy = start_proxy(sipr_factory, ca, targets=f"sip:127.0.0.1:{uas.port};transport=tls")
        sipp_calls(sipp, proxy.addrs["udp"], calls, uas.log)
        assert uas.log.count("BYE") == calls
        rr = [v for k, v in headers_of(uas.log.invites[0]) if k.lower() == "record-route"]
        values = [x.strip() for v in rr for x in v.split(",")]
        tls_port, udp_port = proxy.addrs["tls"][1], proxy.addrs["udp"][1]
        assert len(values) == 2, values
        assert f":{tls_port};transport=tls;lr;r2=on" in values[0], values
        assert f":{udp_port};lr;r2=on" in values[1], values
    finally:
        uas.stop()


# Connection reuse ----------------------------------------------------------


def test_udp_call_reaches_ua_registered_over_tls_through_its_connection(
    sipp: str, sipr_factory, ca: CertAuthority
) -> None:
    """A UA that only connects out (its Contact port 9 accepts nothing)
    registers over TLS with `alias` in its Via (RFC 5923). SIPp calls it over
    UDP: the INVITE goes down the UA's own connection (its flow), and the ACK
    and BYE, addressed to its Contact, reuse it through the alias."""
    proxy = sipr_factory(FLOW_REGISTRAR, listen=LISTEN, extra_args=tls_args(ca))
    tls_addr = proxy.addrs["tls"]
    contact = "<sip:bob@127.0.0.1:9;transport=tls>"
    ua = TlsClientUa(tls_addr, client_context(ca.pem), contact)
    try:
        register = sip_request(
            "REGISTER",
            f"sip:{tls_addr[0]}:{tls_addr[1]}",
            via="SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK{branch};alias",
            extra=f"Contact: {contact};expires=600\r\n",
        ).replace(b"To: <sip:", b"To: <sip:service@", 1)
        assert status_of(ua.request(register)) == 200
        calls = 5
        sipp_calls(sipp, proxy.addrs["udp"], calls, ua.log)
        assert ua.log.count("INVITE") == calls and ua.log.count("BYE") == calls
    finally:
        ua.stop()
