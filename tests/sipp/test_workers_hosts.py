"""Several hosts on one Redis (issue 20, point 4): two sipr instances share
registrations and digest nonce-counts through a real redis-server; alice
registers on A over TCP, bob calls through B, and the INVITE reaches alice
over her own TCP connection to A (B relays along the Path A recorded as the
holder of that connection, decision 0052)."""

from __future__ import annotations

import os
import re
import socket
import time

from tests.conftest import ROOT, header, status_of
from tests.sipp.regkit import RedisServer, SipClient, challenges, digest_response

APP = ROOT / "tests" / "apps" / "workers_app.py"


class TcpPhone:
    """A UA on one TCP connection: what it sends and receives uses it."""

    def __init__(self, server: tuple[str, int], user: str) -> None:
        self.sock = socket.create_connection(server, timeout=5)
        self.host, self.port = self.sock.getsockname()[:2]
        self.user = user
        self.buf = b""
        self.call_id = os.urandom(8).hex()
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5.0) -> bytes:
        """One SIP message (Content-Length framed, RFC 3261 §18.3)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(header(head + b"\r\n\r\n", "Content-Length") or 0)
        while len(rest) < length:
            self._fill(deadline)
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def _fill(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        assert chunk, "connection closed"
        self.buf += chunk

    def register(self, auth: str = "") -> bytes:
        self.cseq += 1
        branch = "z9hG4bK" + os.urandom(6).hex()
        aor = f"sip:{self.user}@127.0.0.1"
        msg = (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.host}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <{aor}>;tag=r{self.call_id[:6]}\r\nTo: <{aor}>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{self.user}@{self.host}:{self.port};transport=tcp>\r\n"
            f"Expires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
        ).encode()
        self.send(msg)
        return self.read()

    def answer(self, req: bytes, code: int, reason: str) -> None:
        head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = [
            ln
            for ln in head[1:]
            if ln.split(":", 1)[0].strip().lower()
            in ("via", "from", "call-id", "cseq", "record-route")
        ]
        to = header(req, "To") or ""
        if ";tag=" not in to:
            to += ";tag=alice1"
        contact = f"Contact: <sip:{self.user}@{self.host}:{self.port};transport=tcp>"
        out = "\r\n".join([f"SIP/2.0 {code} {reason}", *keep, f"To: {to}", contact])
        self.send((out + "\r\nContent-Length: 0\r\n\r\n").encode())


def authorization(challenge: bytes, user: str, password: str, uri: str) -> str:
    params = challenges(challenge)["MD5"]
    nc, cnonce = "00000001", os.urandom(4).hex()
    resp = digest_response(
        "MD5", user, params["realm"], password, "REGISTER", uri, params["nonce"], nc, cnonce
    )
    return (
        f'Authorization: Digest username="{user}", realm="{params["realm"]}", '
        f'nonce="{params["nonce"]}", uri="{uri}", response="{resp}", algorithm=MD5, '
        f'qop=auth, nc={nc}, cnonce="{cnonce}"\r\n'
    )


def request_to(
    route_set: list[str], method: str, uri: str, ok: bytes, cseq: int, via_port: int
) -> bytes:
    """An in-dialog request of the caller after `ok` (the 2xx): Route from its
    Record-Route, reversed (RFC 3261 §12.1.2)."""
    routes = "".join(f"Route: {r}\r\n" for r in reversed(route_set))
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        f"Max-Forwards: 70\r\n{routes}From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\n"
        f"Call-ID: {header(ok, 'Call-ID')}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_two_hosts_on_one_redis(sipr_factory) -> None:
    redis = RedisServer()
    try:
        env = {
            "SIPR_STORE": redis.url(),
            "SIPR_NONCE_STORE": redis.url(),
            "SIPR_NONCE_SECRET": os.urandom(32).hex(),
            "SIPR_AUTH": "1",
        }
        a = sipr_factory(APP, env=env)
        b = sipr_factory(APP, env=env)
        alice = TcpPhone(a.tcp, "alice")
        bob = SipClient(b.udp, user="bob")
        try:
            challenge = alice.register()
            assert status_of(challenge) == 401, challenge
            cred = authorization(challenge, "alice", "alice", "sip:127.0.0.1")
            assert status_of(alice.register(cred)) == 200
            # The same credentials replayed to the other host: refused there.
            replay = SipClient(b.udp, user="alice")
            try:
                sent = replay.build(
                    "REGISTER",
                    "sip:127.0.0.1",
                    headers=[f"Contact: <sip:alice@127.0.0.1:{replay.port}>", cred.strip()],
                )
                resp = replay.exchange(sent)
                assert status_of(resp) == 403 and b"replayed" in resp.split(b"\r\n")[0], resp
            finally:
                replay.close()
            # bob calls through B; B finds alice in Redis, relays along her Path to A,
            # and A sends the INVITE over alice's own connection.
            invite = bob.build(
                "INVITE",
                "sip:alice@127.0.0.1",
                to="sip:alice@127.0.0.1",
                headers=[f"Contact: <sip:bob@127.0.0.1:{bob.port}>"],
            )
            bob.sock.sendto(invite.data, b.udp)
            got = alice.read()
            assert got.startswith(b"INVITE sip:alice@127.0.0.1:"), got
            vias = re.findall(rb"^Via: (.+)$", got, re.M)
            assert len(vias) == 3, got  # A, B, bob
            alice.answer(got, 200, "OK")
            ok = bob.final(invite, timeout=5)
            assert status_of(ok) == 200, ok
            rr = [
                v.strip()
                for line in re.findall(rb"^Record-Route: (.+)$", ok, re.M)
                for v in line.decode().split(",")
            ]
            assert rr, ok
            contact = re.search(r"<([^>]+)>", header(ok, "Contact") or "")
            assert contact is not None
            bob.sock.sendto(request_to(rr, "ACK", contact[1], ok, invite.cseq, bob.port), b.udp)
            assert alice.read().startswith(b"ACK "), "ACK did not reach alice"
            bye = request_to(rr, "BYE", contact[1], ok, invite.cseq + 1, bob.port)
            bob.sock.sendto(bye, b.udp)
            got_bye = alice.read()
            assert got_bye.startswith(b"BYE "), got_bye
            alice.answer(got_bye, 200, "OK")
            bob.sock.settimeout(5)
            while True:
                resp = bob.sock.recv(65535)
                if b"BYE" in (header(resp, "CSeq") or "").encode():
                    break
            assert status_of(resp) == 200, resp
        finally:
            alice.close()
            bob.close()
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()
    finally:
        redis.stop()
