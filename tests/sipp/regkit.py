"""Helpers for the registrar / digest / location-store tests (issue 5): a
redis-server started on a free port, a small SIP client over UDP that answers
digest challenges itself (MD5 or SHA-256, qop=auth), and SIPp processes
running the scenarios in tests/sipp/scenarios_reg (rendered from templates)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, free_port, header, status_of, stop_process
from tests.sipp import runner

SCENARIOS = Path(__file__).resolve().parent / "scenarios_reg"
PBX = ROOT / "examples" / "pbx.py"
REGISTRAR_APP = ROOT / "tests" / "apps" / "registrar_app.py"
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.05):
    """Polls `cond` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# -- redis ----------------------------------------------------------------------


class RedisServer:
    """`redis-server --port N --save '' --appendonly no`, nothing persisted."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
        self.port = free_port(socket.SOCK_STREAM)
        self.dir = tempfile.mkdtemp(prefix="sipr-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(self.ping, 10, f"redis-server on port {self.port}")
        except Exception:
            self.stop()
            raise

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *args: str) -> bytes:
        """One RESP command over a plain socket (no client library needed)."""
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            out += f"${len(a.encode())}\r\n{a}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            return s.recv(65536)

    def ping(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        assert self.command("FLUSHALL").startswith(b"+OK")

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- a SIP client with digest ----------------------------------------------------


def digest_response(
    alg: str, user: str, realm: str, password: str, method: str, uri: str,
    nonce: str, nc: str, cnonce: str,
) -> str:  # fmt: skip
    h = HASHES[alg]
    ha1 = h(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()


def challenges(resp: bytes) -> dict[str, dict[str, str]]:
    """algorithm -> challenge parameters, from WWW-/Proxy-Authenticate."""
    out = {}
    for line in resp.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() not in ("www-authenticate", "proxy-authenticate"):
            continue
        params = dict(re.findall(r'([\w-]+)="?([^",]*)"?', value.split(None, 1)[1]))
        out[params.get("algorithm", "MD5")] = params
    return out


def headers_all(resp: bytes, name: str) -> list[str]:
    out = []
    for line in resp.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            out.append(v.strip())
    return out


@dataclass
class Sent:
    data: bytes
    branch: str
    cseq: int


class SipClient:
    """A UA on a UDP socket of its own. REGISTERs of one client share a
    Call-ID with increasing CSeq (RFC 3261 §10.2.4); `auth=(user, password)`
    answers one 401/407 with credentials for `algorithm`."""

    def __init__(
        self,
        server: tuple[str, int],
        *,
        user: str = "alice",
        domain: str = "127.0.0.1",
        auth: tuple[str, str] | None = None,
        algorithm: str = "MD5",
        via_host: str | None = None,
    ) -> None:
        self.server = server
        self.user, self.domain = user, domain
        self.auth, self.algorithm = auth, algorithm
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.via_sent_by = via_host or f"127.0.0.1:{self.port}"
        self.call_id = os.urandom(8).hex()
        self.cseq = 0
        self.nc = 0
        self.last_authorized: Sent | None = None
        self.last_challenge: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def build(
        self, method: str, uri: str, *, to: str | None = None, headers: list[str] = (),
        call_id: str | None = None, cseq: int | None = None, branch: str | None = None,
    ) -> Sent:  # fmt: skip
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + os.urandom(6).hex()
        aor = f"sip:{self.user}@{self.domain}"
        extra = "".join(f"{h}\r\n" for h in headers)
        data = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.via_sent_by};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <{aor}>;tag={self.call_id[:8]}\r\n"
            f"To: <{to or aor}>\r\n"
            f"Call-ID: {call_id or self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        return Sent(data, branch, cseq)

    def exchange(self, sent: Sent, timeout: float = 5.0) -> bytes:
        """Sends and returns the final response of that transaction
        (provisionals and strays skipped; retransmitted every 0.5 s)."""
        self.sock.sendto(sent.data, self.server)
        return self.final(sent, timeout)

    def final(self, sent: Sent, timeout: float = 5.0) -> bytes:
        """The final response to `sent` (already sent), retransmitting it every 0.5 s."""
        deadline = time.monotonic() + timeout
        next_retrans = time.monotonic() + 0.5
        while True:
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"no final response to:\n{sent.data.decode()}")
            self.sock.settimeout(max(0.01, min(next_retrans, deadline) - now))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                if time.monotonic() >= next_retrans:
                    self.sock.sendto(sent.data, self.server)
                    next_retrans = time.monotonic() + 0.5
                continue
            code = status_of(data)
            via = header(data, "Via") or ""
            if code is None or code < 200 or sent.branch not in via:
                continue
            return data

    def authorization(self, challenge: bytes, method: str, uri: str) -> str:
        assert self.auth is not None
        user, password = self.auth
        params = challenges(challenge)[self.algorithm]
        self.nc += 1
        nc, cnonce = f"{self.nc:08x}", os.urandom(4).hex()
        resp = digest_response(
            self.algorithm, user, params["realm"], password, method, uri,
            params["nonce"], nc, cnonce,
        )  # fmt: skip
        name = "Authorization" if status_of(challenge) == 401 else "Proxy-Authorization"
        return (
            f'{name}: Digest username="{user}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{resp}", '
            f'algorithm={self.algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
        )

    def request(
        self, method: str, uri: str | None = None, *, headers: list[str] = (), **kw
    ) -> bytes:
        """One request, answering one digest challenge when `auth` is set."""
        uri = uri or f"sip:{self.domain}"
        resp = self.exchange(self.build(method, uri, headers=list(headers), **kw))
        if self.auth and status_of(resp) in (401, 407):
            self.last_challenge = resp
            self.nc = 0  # a new nonce: its nonce-count starts again
            cred = self.authorization(resp, method, uri)
            sent = self.build(method, uri, headers=[*headers, cred], **kw)
            self.last_authorized = sent
            resp = self.exchange(sent)
        return resp

    def register(
        self,
        contacts: list[str] | None = None,
        expires: int | None = None,
        headers: list[str] = (),
    ) -> bytes:
        """REGISTER `contacts` (default: this socket) for sip:user@domain."""
        if contacts is None:
            contacts = [f"<sip:{self.user}@127.0.0.1:{self.port}>"]
        hs = [f"Contact: {c}" for c in contacts]
        if expires is not None:
            hs.append(f"Expires: {expires}")
        return self.request("REGISTER", f"sip:{self.domain}", headers=[*hs, *headers])

    def invite(self, uri: str, headers: list[str] = ()) -> bytes:
        """An INVITE (no digest) whose non-2xx final answer is ACKed (RFC 3261
        §17.1.1.3); a 2xx is left to the caller."""
        sent = self.build(
            "INVITE",
            uri,
            to=uri,
            headers=[f"Contact: <sip:caller@127.0.0.1:{self.port}>", *headers],
        )
        resp = self.exchange(sent, timeout=10)
        self.ack(sent, uri, resp)
        return resp

    def ack(self, sent: Sent, uri: str, resp: bytes) -> None:
        """ACKs a non-2xx final response to the INVITE `sent` (same branch)."""
        if (status_of(resp) or 0) < 300:
            return
        to = header(resp, "To") or f"<{uri}>"
        ack = self.build("ACK", uri, to=uri, cseq=sent.cseq, branch=sent.branch)
        data = ack.data.replace(f"To: <{uri}>\r\n".encode(), f"To: {to}\r\n".encode())
        self.sock.sendto(data, self.server)

    def recv_request(self, timeout: float = 5.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65535)
                if not data.startswith(b"SIP/2.0"):
                    return data
        except TimeoutError:
            return None

    def reply_to(self, req: bytes, code: int, reason: str = "OK", to_tag: str = "uas1") -> None:
        """Answers `req` (received on this socket) back to where it came from."""
        head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = [
            ln
            for ln in head[1:]
            if ln.split(":", 1)[0].strip().lower()
            in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route")
        ]
        to = header(req, "To") or ""
        if ";tag=" not in to:
            to += f";tag={to_tag}"
        out = f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join([*keep, f"To: {to}"])
        out += "\r\nContent-Length: 0\r\n\r\n"
        self.sock.sendto(out.encode(), self.server)


# -- SIPp -------------------------------------------------------------------------


def render(template: str, dest_dir: Path, **subst: object) -> Path:
    """tests/sipp/scenarios_reg/TEMPLATE with @KEY@ replaced, written to dest_dir."""
    return runner.render(SCENARIOS / template, dest_dir, **subst)


def reg_sipp(
    sipp: str,
    *,
    port: int,
    scenario: Path | None = None,
    remote: tuple[str, int] | None = None,
    calls: int = 1,
    service: str = "alice",
    workdir: Path | None = None,
) -> runner.Sipp:
    """The registrar tests' SIPp: messages traced (`received()`), short timeouts."""
    return runner.Sipp(
        sipp,
        scenario,
        port,
        remote=remote,
        calls=calls,
        service=service,
        timeout_s=20,
        recv_timeout_s=8,
        trace_messages=True,
        workdir=workdir,
    )


def sipp_register(
    sipp: str,
    server: tuple[str, int],
    port: int,
    tmp: Path,
    *,
    user: str = "alice",
    password: str = "secret",
    expect: int = 200,
    expires: int = 3600,
    q: str = "1.0",
) -> runner.SippStats:
    """SIPp REGISTERs sip:USER@127.0.0.1 from `port` (Contact: that port), answering
    the 401 with `[authentication username=... password=...]`; the scenario
    succeeds when the final answer to the authorized REGISTER is `expect`."""
    scen = render(
        "uac_register.xml", tmp, user=user, password=password, expect=expect,
        expires=expires, q=q,
    )  # fmt: skip
    return reg_sipp(sipp, port=port, scenario=scen, remote=server, service=user, workdir=tmp).wait()
