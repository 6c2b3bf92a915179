"""Acceptance (issue 6, point 4): peers that stop reading while SIPp runs 500
calls per second through the proxy. The other calls see 0 failures; each
stalled connection fills only its own write queue and is then closed; the
transactions sent over it fail over (503 inside the proxy, 500 upstream per
RFC 3261 §16.7 step 6) instead of hanging; the proxy's memory stays bounded.

Two kinds of stalled peer, both never reading their socket:
- a TCP callee: INVITEs from a Python UAC (over UDP) are relayed to it;
- a TCP client pipelining OPTIONS whose answers pile up in the proxy.
The proxy (tests/apps/stateful_proxy.py, no targets) routes by Request-URI;
SIPp's UAC addresses its UAS in the Request-URI and sends to the proxy (-rsa).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT, UdpPeer, free_port, header, non2xx_ack, sip_request, status_of
from tests.sipp.peers import sipr_stats
from tests.sipp.runner import Sipp

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
CALLS, RATE = 5_000, 500
STALLED_INVITE_RATE = 200
# The stalled peers' receive buffers: small, so the proxy's queue fills soon.
TINY_RCVBUF = 4096
PIPELINED_OPTIONS = 3_000
# A leak guard, not a figure: 5,000 calls' transactions (alive until their
# end timers) account for most of the growth (~50 MB); each stalled
# connection may hold at most its write queue.
MAX_RSS_GROWTH = 128 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Reads everything left on `sock`: True when it ends (EOF or reset)
    within `timeout`, False when data stops without an end."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


class StalledCallee:
    """Accepts TCP connections and never reads from them."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before listen(): accepted sockets inherit it (and the window).
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RCVBUF)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.conns.append(self.listener.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.listener.close()


class StalledInviter:
    """Sends INVITEs (over UDP, to the proxy) for the stalled callee at a
    steady rate; records each one's final answer and ACKs it."""

    def __init__(self, proxy: tuple[str, int], callee_port: int) -> None:
        self.proxy = proxy
        self.ruri = f"sip:stalled@127.0.0.1:{callee_port};transport=tcp"
        self.peer = UdpPeer()
        self.invites: dict[str, bytes] = {}
        self.finals: dict[str, int] = {}
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send_for(self, seconds: float) -> None:
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            if n < elapsed * STALLED_INVITE_RATE:
                call_id = f"stalled-{n}-{os.urandom(4).hex()}"
                invite = sip_request("INVITE", self.ruri, port=self.peer.port, call_id=call_id)
                self.invites[call_id] = invite
                self.peer.send(invite, self.proxy)
                n += 1
            else:
                time.sleep(1 / STALLED_INVITE_RATE)

    def _read(self) -> None:
        while not self.stop.is_set():
            resp = self.peer.recv(0.2)
            status = status_of(resp)
            if resp is None or status is None or status < 200:
                continue
            call_id = header(resp, "Call-ID") or ""
            self.finals.setdefault(call_id, status)
            if call_id in self.invites:
                self.peer.send(non2xx_ack(self.invites[call_id], resp), self.proxy)

    def wait_finals(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.finals) < len(self.invites) and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.reader.join(5)
        self.peer.close()


def _pipeline_options(proxy: tuple[str, int]) -> socket.socket:
    """A client that sends many OPTIONS and reads none of the answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RCVBUF)
    sock.settimeout(10.0)
    sock.connect(proxy)
    port = sock.getsockname()[1]
    uri = f"sip:stats@{proxy[0]}:{proxy[1]}"
    via = "SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}"
    try:
        for _ in range(PIPELINED_OPTIONS):
            sock.sendall(sip_request("OPTIONS", uri, via=via, port=port))
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed by the proxy while still sending: what is expected
    return sock


def test_stalled_peers_do_not_disturb_500_cps(sipp: str, sipr_factory) -> None:
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=CALLS, timeout_s=60)
    callee = StalledCallee()
    inviter = None
    try:
        proxy = sipr_factory(PROXY, env={"SIPR_TIMEOUT": "5"})
        pid = proxy.proc.pid
        rss_before = _rss(pid)
        inviter = StalledInviter(proxy.udp, callee.port)
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=CALLS, remote=("127.0.0.1", uas_port),
            rate=RATE, timeout_s=60, extra=("-rsa", f"{proxy.udp[0]}:{proxy.udp[1]}"),
        )  # fmt: skip
        reader_stalled = _pipeline_options(proxy.tcp)
        inviter.send_for(CALLS / RATE)
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (CALLS, 0, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (CALLS, 0), u.summary()
        rss_growth = _rss(pid) - rss_before

        # Every INVITE towards the stalled callee got a final answer: 500 for
        # those on a connection the proxy closed, 408 (relay timeout) for the
        # last ones, still in a connection's socket buffers.
        inviter.wait_finals(10)
        finals = Counter(inviter.finals.values())
        assert len(inviter.finals) == len(inviter.invites), finals
        assert set(finals) <= {500, 408}, finals
        assert finals[500] > 0, finals
        # The proxy closed the stalled connections it had filled (and opened
        # new ones for later INVITEs). Not necessarily every one: a connection
        # opened while another was still connecting may carry a single INVITE.
        closed = [_closed_by_peer(c, 1.0) for c in callee.conns]
        assert sum(closed) >= 1 and len(closed) >= 2, closed
        # ... and the client that never read its answers.
        assert _closed_by_peer(reader_stalled, 5.0)
        reader_stalled.close()
        s = sipr_stats(proxy.tcp)
        malformed = [ln for ln in proxy.log().splitlines() if "malformed" in ln]
        assert s["requests_in.options"] > 1 and s["parse_errors"] == 0, (s, malformed[:5])
        assert s["send_errors"] > 0, s  # the lost sends are counted
        assert rss_growth < MAX_RSS_GROWTH, rss_growth
        print(
            f"\n{CALLS} calls ok; stalled INVITEs {dict(finals)}, callee connections "
            f"{len(callee.conns)} ({sum(closed)} closed by the proxy), "
            f"OPTIONS read {s['requests_in.options']}, "
            f"RSS +{rss_growth / 1e6:.1f} MB"
        )
        assert proxy.alive()
    finally:
        uas.kill()
        callee.close()
        if inviter is not None:
            inviter.close()
