"""Acceptance (issue 2, point 2): every RFC 4475 / RFC 5118 message sent over
UDP to `sipr run examples/responder.py` is handled as its RFC section says:
valid -> the right answer, invalid -> 400 (505 for a bad version) or silent
drop when no response can be routed; the process never dies."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tests.conftest import FIXTURES, sip_request, status_of

MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())

#: Answers from a UAS that supports no extensions, reads SDP/text/multipart
#: bodies and implements the common methods (examples/responder.py).
UAS_ROLE: dict[str, set[int | None]] = {
    "unksm2.dat": {200},  # a proxy/UAS treats it like any request (a registrar: 400)
    "zeromf.dat": {200},  # Max-Forwards 0 stops proxies, not the UAS it reached
    "badbranch.dat": {200, 400},
    "mismatch02.dat": {400, 501},
    "regaut01.dat": {200},  # a non-registrar ignores the unknown auth scheme
    "inv2543.dat": {200},
    "port-ambiguous.dat": {200},
    "via-received-param-with-delim.dat": {200},
    "ipv6-bug-abnf-3-colons.dat": {200, 400},
    "intmeth.dat": {501},  # unknown methods: 501 (RFC 3261 §21.5.2)
    "esc02.dat": {501},
}

# Loopback address the test sends from, so responses routed by Via sent-by
# ports (RFC 3261 §18.2.2) come back here without taking 127.0.0.1's ports.
PEER_IP = "127.0.0.77"


def expected(entry: dict) -> set[int | None]:
    name = entry["file"].split("/")[1]
    if name in UAS_ROLE:
        return UAS_ROLE[name]
    if entry["kind"] == "response":
        return {None}  # responses to us match nothing: dropped silently
    exp = entry["expect"]
    if entry["verdict"] == "invalid" or exp.get("response"):
        return {exp["response"]}
    return {200}


def via_port(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\r\n[ \t]+", " ", head)
    m = re.search(
        r"^(?:via|v)\s*:\s*SIP\s*/\s*2\.0\s*/\s*\S+\s+(\[[^\]]*\]|[^;:\s,]+)(?::\s*(\d+))?",
        head,
        re.IGNORECASE | re.MULTILINE,
    )
    return int(m.group(2)) if m and m.group(2) else 5060


def call_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"^(?:call-id|i)\s*:\s*(\S+)", head, re.IGNORECASE | re.MULTILINE)
    return m.group(1) if m else None


def final_status(sock: socket.socket, timeout: float, cid: str | None) -> int | None:
    """Reads answers for Call-ID `cid` until a final one (or none in time).
    Answers for other calls (e.g. 2xx retransmitted until an ACK that a
    torture test never sends) are skipped."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        status = status_of(data)
        if cid is not None and call_id(data) != cid:
            continue
        if status is not None and status >= 200:
            return status
    return None


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_torture_message_over_udp(responder, entry: dict) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    want = expected(entry)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((PEER_IP, via_port(data)))
        sock.sendto(data, responder.udp)
        cid = call_id(data)
        got = final_status(sock, 0.5 if want == {None} else 3.0, cid)
        assert got in want, f"{entry['file']} ({entry['title']}): got {got}, want {want}"
        # The first request in dblreq is answered; the trailing bytes are not.
        if entry["file"].endswith("dblreq.dat"):
            assert final_status(sock, 0.3, cid) is None
        # Whatever came before, the server still answers.
        probe = sip_request(
            port=sock.getsockname()[1],
            via="SIP/2.0/UDP " + PEER_IP + ":{port};branch=z9hG4bK{branch}",
        )
        sock.sendto(probe, responder.udp)
        assert final_status(sock, 3.0, call_id(probe)) == 200, responder.log()[-3000:]
    assert responder.alive()
