"""Issue 16, acceptance 1-3: RFC 3263 resolution against a real DNS server
(dnsmasq on a loopback port), failover inside one transaction, the
destination blocklist, SRV weights, and a loop that never waits for DNS."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

from tests.conftest import ROOT, free_port, sip_answer, sip_request, status_of
from tests.dnskit import NAPTR, SRV, DelayingRelay
from tests.integration.ctlkit import rpc
from tests.sipp.runner import run_uac, start_uas

APP = ROOT / "tests" / "apps" / "dns_proxy.py"


class Responder:
    """A UDP SIP peer answering every request 200 (or silent), counting them."""

    def __init__(self, answer: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.requests: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            method = data.split(b" ", 1)[0].decode(errors="replace")
            self.requests[method] += 1
            if self.answer and method not in ("ACK", "SIP/2.0"):
                self.sock.sendto(sip_answer(data, 200, "OK", "r"), peer)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=3)
        self.sock.close()


def test_naptr_srv_failover_and_blocklist(sipr_factory, dnsmasq_factory, sipp):  # type: ignore[no-untyped-def]
    silent = Responder(answer=False)
    uas = start_uas(sipp, free_port())
    tcp_uas = start_uas(sipp, free_port(), transport="t1")
    refused = free_port(socket.SOCK_STREAM)  # nothing listens there
    try:
        dns = dnsmasq_factory(
            [
                "--naptr-record=svc.test,10,50,s,SIP+D2U,,_sip._udp.svc.test",
                f"--srv-host=_sip._udp.svc.test,p10.svc.test,{silent.port},10,0",
                f"--srv-host=_sip._udp.svc.test,p20.svc.test,{uas.port},20,0",
                "--host-record=p10.svc.test,127.0.0.1",
                "--host-record=p20.svc.test,127.0.0.1",
                # tcp.test: the NAPTR says TCP (the UAS there listens on TCP
                # only); its priority-10 target refuses connections.
                "--naptr-record=tcp.test,10,50,s,SIP+D2T,,_sip._tcp.tcp.test",
                f"--srv-host=_sip._tcp.tcp.test,closed.tcp.test,{refused},10,0",
                f"--srv-host=_sip._tcp.tcp.test,t.tcp.test,{tcp_uas.port},20,0",
                "--host-record=closed.tcp.test,127.0.0.1",
                "--host-record=t.tcp.test,127.0.0.1",
            ]
        )
        proxy = sipr_factory(
            APP,
            extra_args=("--resolver", dns.addr),
            env={"SIPR_DOMAINS": "bob=svc.test,carol=tcp.test", "SIPR_FAILOVER_TIMEOUT": "1"},
        )
        # 1. Priority 10 is silent: the call completes on priority 20 in the
        # same INVITE transaction, after the failover timeout.
        started = time.monotonic()
        first = run_uac(sipp, proxy.udp, calls=1, rate=1, port=free_port(), extra=("-s", "bob"))
        took = time.monotonic() - started
        assert first.successful == 1, first.output
        assert first.failed == 0
        assert silent.requests["INVITE"] >= 1, "the priority-10 target was not tried first"
        assert took >= 0.9, took
        tried = silent.requests["INVITE"]
        blocked = rpc(proxy.ctl, "dst.blocklist")
        assert any(b["address"] == f"127.0.0.1:{silent.port}" for b in blocked), blocked
        failovers = rpc(proxy.ctl, "stats.get", "dns.")["dns.failovers"]
        assert failovers == 1
        # 2. The next call skips the blocklisted destination at once: nothing
        # reaches it, no failover happens.
        second = run_uac(sipp, proxy.udp, calls=1, rate=1, port=free_port(), extra=("-s", "bob"))
        assert second.successful == 1, second.output
        assert silent.requests["INVITE"] == tried
        assert rpc(proxy.ctl, "stats.get", "dns.")["dns.failovers"] == failovers
        # 3. NAPTR SIP+D2T: over TCP; the refused connection fails over at
        # once to the next SRV target.
        third = run_uac(sipp, proxy.udp, calls=1, rate=1, port=free_port(), extra=("-s", "carol"))
        assert third.successful == 1, third.output
        blocked = {b["address"]: b for b in rpc(proxy.ctl, "dst.blocklist")}
        assert blocked[f"127.0.0.1:{refused}"]["reason"] == "unreachable", blocked
        assert blocked[f"127.0.0.1:{refused}"]["transport"] == "tcp"
        cache = rpc(proxy.ctl, "dns.cache")
        assert {(r["host"], r["transport"]) for r in cache} >= {
            ("svc.test", "udp"),
            ("tcp.test", "tcp"),
        }, cache
        # Two calls to svc.test, one resolution: the second came from the cache.
        assert dns.queries("svc.test", "NAPTR") == 1
    finally:
        silent.stop()
        uas.stop()
        tcp_uas.stop()


def _relay_many(proxy, user: str, count: int, window: int = 200) -> int:  # type: ignore[no-untyped-def]
    """Sends `count` OPTIONS to USER through the proxy, `window` at a time;
    returns how many were answered 200."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    port = peer.getsockname()[1]
    peer.settimeout(1)
    ok = 0
    try:
        for start in range(0, count, window):
            n = min(window, count - start)
            for _ in range(n):
                peer.sendto(
                    sip_request("OPTIONS", f"sip:{user}@{proxy.udp[0]}:{proxy.udp[1]}", port=port),
                    proxy.udp,
                )
            for _ in range(n):
                try:
                    ok += status_of(peer.recv(65535)) == 200
                except TimeoutError:
                    break
    finally:
        peer.close()
    return ok


def test_srv_weights_share_requests(sipr_factory, dnsmasq_factory):  # type: ignore[no-untyped-def]
    light, heavy = Responder(), Responder()
    try:
        dns = dnsmasq_factory(
            [
                f"--srv-host=_sip._udp.w.test,light.w.test,{light.port},10,1",
                f"--srv-host=_sip._udp.w.test,heavy.w.test,{heavy.port},10,3",
                "--host-record=light.w.test,127.0.0.1",
                "--host-record=heavy.w.test,127.0.0.1",
            ]
        )
        # No failover timeout: a datagram lost on this loaded box must not
        # be re-sent to the other target and skew the count.
        proxy = sipr_factory(
            APP,
            extra_args=("--resolver", dns.addr),
            env={"SIPR_DOMAINS": "w=w.test", "SIPR_FAILOVER_TIMEOUT": "0"},
        )
        total = 10_000
        answered = _relay_many(proxy, "w", total, window=50)
        assert answered >= total * 0.99, answered
        got = light.requests["OPTIONS"] + heavy.requests["OPTIONS"]
        assert got >= answered
        share = heavy.requests["OPTIONS"] / got
        assert 0.70 <= share <= 0.80, f"heavy target got {share:.3f} of requests"
        print(f"weights 1:3 -> {1 - share:.3f} / {share:.3f}")
    finally:
        light.stop()
        heavy.stop()


def test_loop_answers_while_dns_is_slow(sipr_factory, dnsmasq_factory):  # type: ignore[no-untyped-def]
    target = Responder()
    dns = dnsmasq_factory(
        [
            "--naptr-record=slow.test,10,50,s,SIP+D2U,,_sip._udp.slow.test",
            f"--srv-host=_sip._udp.slow.test,s.slow.test,{target.port},10,0",
            "--host-record=s.slow.test,127.0.0.1",
        ]
    )
    relay = DelayingRelay(("127.0.0.1", dns.port), delay=2.0)
    waiting = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pinger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        proxy = sipr_factory(
            APP, extra_args=("--resolver", relay.addr), env={"SIPR_DOMAINS": "slow=slow.test"}
        )
        waiting.bind(("127.0.0.1", 0))
        wport = waiting.getsockname()[1]
        uri = f"sip:slow@{proxy.udp[0]}:{proxy.udp[1]}"
        for _ in range(100):
            waiting.sendto(sip_request("OPTIONS", uri, port=wport), proxy.udp)
        # While those wait for DNS (2 s per answer), the route keeps answering.
        pinger.bind(("127.0.0.1", 0))
        pport = pinger.getsockname()[1]
        pinger.settimeout(2)
        ping_uri = f"sip:ping@{proxy.udp[0]}:{proxy.udp[1]}"
        rtts = []
        for _ in range(1000):
            t0 = time.perf_counter()
            pinger.sendto(sip_request("OPTIONS", ping_uri, port=pport), proxy.udp)
            assert status_of(pinger.recv(65535)) == 200
            rtts.append(time.perf_counter() - t0)
        pings_done = time.monotonic()
        assert relay.answered == 0, "the pings did not all run during the DNS wait"
        waiting.settimeout(15)
        answered = 0
        first_answer = None
        for _ in range(100):
            answered += status_of(waiting.recv(65535)) == 200
            first_answer = first_answer or time.monotonic()
        assert answered == 100
        assert first_answer is not None and first_answer > pings_done
        rtts.sort()
        p99 = rtts[int(len(rtts) * 0.99) - 1]
        print(f"ping p50 {rtts[len(rtts) // 2] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
        assert p99 < 0.010, f"p99 {p99 * 1000:.1f} ms while DNS was slow"
        # A hundred requests for one name: one query of each kind (the DNS
        # client may retransmit it over UDP, with the same id).
        assert relay.count("slow.test", NAPTR) == 1
        assert relay.count("_sip._udp.slow.test", SRV) == 1
        stats = rpc(proxy.ctl, "stats.get", "dns.")
        assert stats["dns.resolutions"] == 1 and stats["dns.joined"] == 99, stats
    finally:
        waiting.close()
        pinger.close()
        relay.stop()
        target.stop()


def test_unresolvable_name_fails_the_relay(sipr_factory, dnsmasq_factory, udp_peer):  # type: ignore[no-untyped-def]
    dns = dnsmasq_factory([])
    proxy = sipr_factory(
        APP, extra_args=("--resolver", dns.addr), env={"SIPR_DOMAINS": "nobody=nowhere.test"}
    )
    udp_peer.send(
        sip_request("OPTIONS", f"sip:nobody@{proxy.udp[0]}", port=udp_peer.port), proxy.udp
    )
    # The handler saw 503; upstream gets 500 (RFC 3261 §16.7 step 6).
    assert status_of(udp_peer.recv(10)) == 500
    cache = rpc(proxy.ctl, "dns.cache")
    assert any(r["host"] == "nowhere.test" and r["error"] for r in cache), cache


def test_resolver_flag_errors(tmp_path):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "sipr", "run", str(APP), "--resolver", "dns.example:53"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SIPR_RUN_DIR": str(tmp_path)},
    )
    assert out.returncode != 0
    assert "--resolver dns.example:53" in out.stderr


def test_aaaa_only_name_over_ipv6(sipr_factory, dnsmasq_factory):  # type: ignore[no-untyped-def]
    """A name with only an AAAA record is reached over IPv6 when sipr
    listens there (the A lookup's "no record" does not fail it)."""
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.bind(("::1", 0))
    port = peer.getsockname()[1]
    peer.settimeout(10)
    dns = dnsmasq_factory(["--host-record=v6.test,::1"])
    proxy = sipr_factory(
        APP,
        listen=("udp:[::1]:0", "tcp:127.0.0.1:0"),
        extra_args=("--resolver", dns.addr),
        env={"SIPR_DOMAINS": f"v6=v6.test:{port}"},
    )
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as caller:
        caller.bind(("::1", 0))
        caller.settimeout(10)
        uri = f"sip:v6@[{proxy.udp[0]}]:{proxy.udp[1]}"
        via = "SIP/2.0/UDP [::1]:{port};branch=z9hG4bK{branch};rport"
        caller.sendto(sip_request("OPTIONS", uri, via=via, port=caller.getsockname()[1]), proxy.udp)
        data, src = peer.recvfrom(65535)
        assert data.startswith(b"OPTIONS sip:v6@v6.test:")
        assert src[0] == "::1"
        peer.sendto(sip_answer(data, 200, "OK", "v6"), src)
        assert status_of(caller.recv(65535)) == 200
    peer.close()
