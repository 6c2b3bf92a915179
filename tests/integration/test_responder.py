"""sipr.Request and reply() against a running `sipr run examples/responder.py`."""

import socket
import textwrap

from tests.conftest import UdpPeer, header, sip_request, status_of


def test_options_over_udp_gets_a_correct_200(responder, udp_peer: UdpPeer) -> None:
    req = sip_request("OPTIONS", port=udp_peer.port, call_id="opt-1", branch="b1")
    udp_peer.send(req, responder.udp)
    resp = udp_peer.recv()
    assert status_of(resp) == 200
    assert resp is not None
    # RFC 3261 §8.2.6: Via, From, Call-ID, CSeq copied; To gets a tag.
    via = header(resp, "Via")
    assert via is not None and via.startswith("SIP/2.0/UDP 127.0.0.1:")
    assert f"rport={udp_peer.port}" in via and "received=127.0.0.1" in via
    assert header(resp, "Call-ID") == "opt-1"
    assert header(resp, "CSeq") == "1 OPTIONS"
    assert header(resp, "From") == "<sip:alice@127.0.0.1>;tag=ab1"
    to = header(resp, "To")
    assert to is not None and ";tag=" in to
    assert header(resp, "Content-Length") == "0"


def test_options_over_tcp(responder) -> None:
    with socket.create_connection(responder.tcp, timeout=3) as s:
        port = s.getsockname()[1]
        via = "SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}"
        # Two requests in one segment: framing must split them.
        s.sendall(
            sip_request("OPTIONS", via=via, port=port) + sip_request("OPTIONS", via=via, port=port)
        )
        data = b""
        while data.count(b"SIP/2.0 200") < 2:
            chunk = s.recv(65535)
            assert chunk, "connection closed before both answers"
            data += chunk
    assert data.count(b"SIP/2.0 200 OK") == 2


def test_tcp_keepalive_ping_gets_pong(responder) -> None:
    with socket.create_connection(responder.tcp, timeout=3) as s:
        s.sendall(b"\r\n\r\n")
        assert s.recv(10) == b"\r\n"


def test_invite_gets_ringing_then_ok_with_same_to_tag(responder, udp_peer: UdpPeer) -> None:
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    udp_peer.send(
        sip_request(
            "INVITE", port=udp_peer.port, extra="Content-Type: application/sdp\r\n", body=sdp
        ),
        responder.udp,
    )
    ringing, ok = udp_peer.recv(), udp_peer.recv()
    assert (status_of(ringing), status_of(ok)) == (180, 200)
    assert ringing is not None and ok is not None
    assert header(ringing, "To") == header(ok, "To")


def test_unknown_method_gets_501(responder, udp_peer: UdpPeer) -> None:
    udp_peer.send(sip_request("FROBNICATE", port=udp_peer.port), responder.udp)
    assert status_of(udp_peer.recv()) == 501


def test_require_unknown_extension_gets_420(responder, udp_peer: UdpPeer) -> None:
    udp_peer.send(
        sip_request("OPTIONS", port=udp_peer.port, extra="Require: nothingSupportsThis\r\n"),
        responder.udp,
    )
    resp = udp_peer.recv()
    assert status_of(resp) == 420
    assert resp is not None and header(resp, "Unsupported") == "nothingSupportsThis"


def test_unknown_uri_scheme_gets_416_from_the_core(responder, udp_peer: UdpPeer) -> None:
    udp_peer.send(sip_request("OPTIONS", uri="mystery:abc", port=udp_peer.port), responder.udp)
    assert status_of(udp_peer.recv()) == 416


def test_garbage_is_dropped_and_server_survives(responder, udp_peer: UdpPeer) -> None:
    for junk in (b"", b"\x00\xff" * 100, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
        udp_peer.send(junk, responder.udp)
    udp_peer.send(sip_request(port=udp_peer.port), responder.udp)
    assert status_of(udp_peer.recv()) == 200
    assert responder.alive()


def test_malformed_request_gets_400_naming_the_problem(responder, udp_peer: UdpPeer) -> None:
    msg = textwrap.dedent(
        f"""\
        OPTIONS sip:x@127.0.0.1 SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{udp_peer.port};branch=z9hG4bKbad;rport
        From: <sip:a@127.0.0.1>;tag=1
        To: "unterminated <sip:x@127.0.0.1>
        Call-ID: bad-1
        CSeq: 1 OPTIONS
        Content-Length: 0

        """
    ).replace("\n", "\r\n")
    udp_peer.send(msg.encode(), responder.udp)
    resp = udp_peer.recv()
    assert status_of(resp) == 400
    assert resp is not None and b"To" in resp.split(b"\r\n", 1)[0]
