"""Helpers for the async-routing acceptance tests (issue 4): the billing
service of examples/billing_service.py as a subprocess, the app's counters
over TCP, RSS from /proc, a Python UA for single probe calls, and a raw UDP
client that holds tens of thousands of INVITEs suspended at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import (
    EXAMPLES,
    free_port,
    header,
    options_counters,
    options_over_tcp,
    status_of,
    stop_process,
)

SCENARIOS = Path(__file__).resolve().parent / "scenarios_async"


class BillingService:
    """examples/billing_service.py on a free port (stopped with `stop`)."""

    def __init__(self, *args: str) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "billing_service.py"), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening" in line, f"billing service did not start: {line!r}"
        self.addr = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def app_stats(addr: tuple[str, int], user: str = "billing-stats") -> dict[str, int]:
    """Every X- counter the app reports to `OPTIONS sip:USER@` (name without 'x-')."""
    return options_counters(addr, user)


def wait_stats(addr: tuple[str, int], done, timeout: float, user: str = "billing-stats"):  # type: ignore[no-untyped-def]
    """Polls `app_stats` until `done(stats)`; returns the last stats either way."""
    deadline = time.monotonic() + timeout
    while True:
        s = app_stats(addr, user)
        if done(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.25)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _response_meta(data: bytes) -> tuple[int | None, str, str]:
    """(status, Call-ID, CSeq method) of a response."""
    cid = header(data, "Call-ID") or header(data, "i") or ""
    cseq = (header(data, "CSeq") or " ").split()
    return status_of(data), cid, cseq[-1] if cseq else ""


class ProbeCall:
    """One complete call through the proxy from a Python UDP socket: INVITE,
    (1xx), 200, ACK and BYE along the Record-Route, 200 for the BYE. Any other
    final answer to the INVITE is ACKed and reported."""

    def __init__(self, proxy: tuple[str, int]) -> None:
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    def _recv_final(self, call_id: str, method: str, until: float) -> bytes | None:
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            status, cid, m = _response_meta(data)
            if cid == call_id and m == method and status is not None and status >= 200:
                return data
        return None

    def call(self, timeout: float = 1.0) -> int | None:
        """Returns the INVITE's final status (None: no answer in `timeout`)."""
        self.n += 1
        cid = f"probe-{os.getpid()}-{self.port}-{self.n}"
        tag = f"p{self.n}"
        host, port = self.proxy
        branch = os.urandom(6).hex()
        invite = (
            f"INVITE sip:callee@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:callee@{host}:{port}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:probe@127.0.0.1:{self.port}>\r\nContent-Length: 0\r\n\r\n"
        )
        self.sock.sendto(invite.encode(), self.proxy)
        until = time.monotonic() + timeout
        resp = self._recv_final(cid, "INVITE", until)
        if resp is None:
            return None
        status = status_of(resp)
        to = header(resp, "To") or header(resp, "t") or ""
        if status is not None and status >= 300:  # hop-by-hop ACK, same branch
            ack = (
                f"ACK sip:callee@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: {to}\r\n"
                f"Call-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            )
            self.sock.sendto(ack.encode(), self.proxy)
            return status
        # 2xx: ACK and BYE go to the Contact through the recorded route.
        rr = [
            ln.split(":", 1)[1].strip()
            for ln in resp.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
            if ln.lower().startswith("record-route:")
        ]
        contact = (header(resp, "Contact") or header(resp, "m") or "").strip("<>").split(">")[0]
        route = "".join(f"Route: {r}\r\n" for r in rr)
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            b = os.urandom(6).hex()
            msg = (
                f"{method} {contact} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{b};rport\r\n"
                f"{route}Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: {to}\r\n"
                f"Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
            self.sock.sendto(msg.encode(), self.proxy)
        bye = self._recv_final(cid, "BYE", time.monotonic() + timeout)
        return status if status_of(bye) == 200 else -1


class MassInviter:
    """Sends `count` INVITEs with unique Call-IDs and branches from one UDP
    socket, paced at `rate` per second so the proxy's socket buffer is not
    overrun; a receiver thread records the 100 Trying and final answers per
    call and ACKs every final non-2xx (hop-by-hop, the INVITE's branch)."""

    def __init__(
        self,
        proxy: tuple[str, int],
        count: int,
        run: str,
        user: str = "hold",
        caller: str = "caller",
    ) -> None:
        self.proxy = proxy
        self.count = count
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        host, port = proxy
        self.prefix = f"{run}-{os.getpid()}-{self.port}-"
        self.head = (
            f"INVITE sip:{user}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{run}x{{i}};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{caller}@127.0.0.1>;tag=t{{i}}\r\n"
            f"To: <sip:{user}@{host}:{port}>\r\nCall-ID: {self.prefix}{{i}}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{self.port}>\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        self.ack = (
            f"ACK sip:{user}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{run}x{{i}};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{caller}@127.0.0.1>;tag=t{{i}}\r\n"
            f"To: {{to}}\r\nCall-ID: {self.prefix}{{i}}\r\nCSeq: 1 ACK\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        self.trying: set[int] = set()
        self.finals: dict[int, int] = {}
        #: First line of each call's final answer, and when it arrived.
        self.final_lines: dict[int, str] = {}
        self.final_at: dict[int, float] = {}
        self.stray = 0
        self._stop = False
        self._rx = threading.Thread(target=self._receive, daemon=True)
        self._rx.start()

    def invite(self, i: int) -> bytes:
        return self.head.format(i=i).encode()

    def _receive(self) -> None:
        self.sock.settimeout(0.2)
        plen = len(self.prefix)
        while not self._stop:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            status, cid, method = _response_meta(data)
            if status is None or method != "INVITE" or not cid.startswith(self.prefix):
                self.stray += 1
                continue
            i = int(cid[plen:])
            if status < 200:
                self.trying.add(i)
                continue
            if i not in self.finals:
                self.final_at[i] = time.monotonic()
                self.final_lines[i] = data.split(b"\r\n", 1)[0].decode(errors="replace")
            self.finals[i] = status
            if status >= 300:
                to = header(data, "To") or header(data, "t") or ""
                self.sock.sendto(self.ack.format(i=i, to=to).encode(), self.proxy)

    def send_all(self, rate: float, chunk: int = 50) -> float:
        """Sends every INVITE once, paced; returns the seconds it took."""
        start = time.monotonic()
        sock, proxy = self.sock, self.proxy
        for base in range(0, self.count, chunk):
            for i in range(base, min(base + chunk, self.count)):
                sock.sendto(self.invite(i), proxy)
            due = start + (base + chunk) / rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
        return time.monotonic() - start

    def resend_unacknowledged(self, rate: float) -> int:
        """Retransmits (same branch) the INVITEs that got neither a 100 nor a
        final answer; the proxy absorbs those it already has."""
        missing = [i for i in range(self.count) if i not in self.trying and i not in self.finals]
        start = time.monotonic()
        for n, i in enumerate(missing):
            self.sock.sendto(self.invite(i), self.proxy)
            if n % 50 == 49 and (wait := start + n / rate - time.monotonic()) > 0:
                time.sleep(wait)
        return len(missing)

    def wait_finals(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while len(self.finals) < self.count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.finals)

    def close(self) -> None:
        self._stop = True
        self._rx.join(2)
        self.sock.close()


def options(addr: tuple[str, int], user: str, timeout: float = 5.0) -> int | None:
    """One OPTIONS over TCP; returns the status."""
    return status_of(options_over_tcp(addr, user, timeout=timeout))
