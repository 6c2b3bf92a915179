"""Acceptance (issue 3, points 1-5, 7, 8): the stateful proxy between real SIPp
peers. The proxy is tests/apps/stateful_proxy.py (no `@app.in_dialog`, so ACK and
BYE, which carry our Record-Route as Route, are loose-routed in Rust)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    UdpPeer,
    free_port,
    header,
    non2xx_ack,
    sip_answer,
    sip_request,
    status_of,
)
from tests.sipp.peers import cpu_ns, cpu_ticks_ms, sipr_stats, wait_drained
from tests.sipp.runner import Sipp

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"


def _proxy(sipr_factory, **env: str):
    return sipr_factory(PROXY, env=env)


def _app_seen(proxy) -> dict[str, int]:
    """Requests the Python route handler saw, by method (tests/apps/stateful_proxy.py)."""
    return {k: v for k, v in sipr_stats(proxy.tcp).items() if k.startswith("app.")}


def _received(workdir: Path, pattern: str) -> list[str]:
    """First lines of the messages a SIPp process received (needs -trace_msg)."""
    lines = []
    for log in workdir.glob("*_messages.log"):
        for block in log.read_text(errors="replace").split("-" * 47):
            if "message received" in block:
                body = block.split(":\n\n", 1)[-1].lstrip()
                first = body.split("\n", 1)[0]
                if re.search(pattern, first):
                    lines.append(first)
    return lines


# 1 ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_record_route_calls_10k(sipp: str, sipr_factory, transport: str) -> None:
    """10,000 INVITE/ACK/BYE calls at 500 cps; the UAC honours Record-Route, so ACK
    and BYE carry our Route and are loose-routed in Rust. 0 failed on both sides."""
    calls, rate = 10_000, 500
    mode = "u1" if transport == "udp" else "t1"
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, transport=mode, timeout_s=90)
    try:
        hop = f"sip:127.0.0.1:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
        proxy = _proxy(sipr_factory, SIPR_TARGETS=hop)
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.addrs[transport],
            rate=rate, transport=mode, timeout_s=90,
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()
        assert r.returncode == 0, r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()
        s = sipr_stats(proxy.tcp)
        # Every ACK and BYE went through the core's loose routing, none through
        # Python: the application saw exactly one request per call, the INVITE.
        assert s["requests_in.ack"] >= calls and s["requests_in.bye"] >= calls, s
        assert _app_seen(proxy) == {"app.invite": calls}
        assert s["parse_errors"] == 0 and s["send_errors"] == 0, s
        assert proxy.alive()
        print(f"\n{transport}: {calls} calls, UAC retransmissions {r.retransmissions}, "
              f"UAS retransmissions {u.retransmissions}, proxy retransmissions "
              f"{s['retransmissions']}")  # fmt: skip
    finally:
        uas.kill()


# 2 ---------------------------------------------------------------------------


def test_cancel_after_180(sipp: str, sipr_factory) -> None:
    """INVITE, 180, CANCEL: the caller gets 200 for the CANCEL and 487 for the
    INVITE; the UAS gets a CANCEL whose branch equals the INVITE's it saw."""
    calls = 20
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_cancelled.xml", uas_port, calls=calls, timeout_s=30)
    try:
        proxy = _proxy(sipr_factory, SIPR_TARGETS=f"sip:127.0.0.1:{uas_port}")
        uac = Sipp(
            sipp, "uac_cancel.xml", uac_port, calls=calls, remote=proxy.udp, rate=20,
            timeout_s=30,
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        assert r.logs.count("CANCELLED") == calls, r.logs
        u = uas.wait()
        assert (u.successful, u.failed, u.returncode) == (calls, 0, 0), u.summary()
        ok = re.findall(r"CANCEL-BRANCH-OK invite=branch=(\S+) cancel=branch=(\S+)", u.logs)
        assert len(ok) == calls and "MISMATCH" not in u.logs, u.logs
        # The branch is the proxy's own (its client transaction), not the caller's.
        assert all(a == b and a.startswith("z9hG4bKsr") for a, b in ok), ok
        # The CANCEL was answered in Rust; the handler saw the INVITE only. The
        # callee's 200s for the proxy's CANCELs matched their client transaction.
        s = sipr_stats(proxy.tcp)
        assert {k: v for k, v in s.items() if k.startswith("app.")} == {"app.invite": calls}
        assert s["requests_in.cancel"] == calls and s["dropped"] == 0, s
        assert proxy.alive()
    finally:
        uas.kill()


def test_cancel_is_retransmitted_when_lost(sipp: str, sipr_factory) -> None:
    """The proxy's CANCEL is a client transaction of its own (RFC 3261 9.1,
    17.1.2): when the first copy is lost, Timer E sends it again with the same
    branch, and the caller still gets its 487. The callee here is a raw socket
    that ignores the first CANCEL."""
    callee = UdpPeer()
    uac = None
    try:
        proxy = _proxy(sipr_factory, SIPR_TARGETS=f"sip:127.0.0.1:{callee.port}")
        uac = Sipp(sipp, "uac_cancel.xml", free_port(), calls=1, remote=proxy.udp, timeout_s=15)
        invite = callee.recv(5.0)
        assert invite is not None and invite.startswith(b"INVITE "), invite
        branch = (header(invite, "Via") or "").split("branch=")[1].split(";")[0]
        callee.send(sip_answer(invite, 180, "Ringing", "callee1"), proxy.udp)
        first = callee.recv(5.0)
        assert first is not None and first.startswith(b"CANCEL "), first
        sent_at = time.monotonic()
        # Lost: not answered. The same CANCEL must come again after T1 (500 ms).
        again = callee.recv(3.0)
        assert again is not None, "the CANCEL was not retransmitted"
        assert again.startswith(b"CANCEL ") and branch in (header(again, "Via") or ""), again
        assert time.monotonic() - sent_at >= 0.4
        callee.send(sip_answer(again, 200, "OK", "callee1"), proxy.udp)
        callee.send(sip_answer(invite, 487, "Request Terminated", "callee1"), proxy.udp)
        ack = callee.recv(3.0)
        assert ack is not None and ack.startswith(b"ACK ") and branch in (header(ack, "Via") or "")
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (1, 0, 0), r.summary()
        # The 200 for the CANCEL ended its transaction: no further copy.
        assert callee.recv(1.5) is None
        assert proxy.alive()
    finally:
        callee.close()
        if uac is not None:
            uac.kill()


# 3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["busy", "silent", "ringing"])
def test_serial_failover(sipp: str, sipr_factory, first: str) -> None:
    """The first hop answers 486, or nothing (408 after the 2 s relay timeout),
    or rings and never answers (CANCELled at the timeout: its 487 counts as
    408); the route relays to the second, which answers 200. The caller sees
    no failure: no 486, 408 or 487 reaches it, and the call completes."""
    calls = 5
    second_port, uac_port = free_port(), free_port()
    silent = None
    busy = None
    if first in ("busy", "ringing"):
        first_port = free_port()
        scenario = "uas_busy.xml" if first == "busy" else "uas_cancelled.xml"
        busy = Sipp(sipp, scenario, first_port, calls=calls, timeout_s=30)
    else:
        silent = UdpPeer()
        first_port = silent.port
    second = Sipp(sipp, "uas_rr.xml", second_port, calls=calls, timeout_s=30)
    try:
        proxy = _proxy(
            sipr_factory,
            SIPR_TARGETS=f"sip:127.0.0.1:{first_port},sip:127.0.0.1:{second_port}",
            SIPR_TIMEOUT="2",
        )
        start = time.monotonic()
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=10,
            timeout_s=30, extra=("-trace_msg",),
        )  # fmt: skip
        r = uac.wait()
        elapsed = time.monotonic() - start
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        finals = _received(uac.workdir, r"^SIP/2\.0 [2-6]\d\d ")
        assert not [f for f in finals if not f.startswith("SIP/2.0 200 ")], finals
        assert len([f for f in finals if f.startswith("SIP/2.0 200")]) == 2 * calls, finals
        s = second.wait()
        assert (s.successful, s.failed, s.returncode) == (calls, 0, 0), s.summary()
        if busy is not None:
            b = busy.wait()
            # Each 486 / 487 was ACKed by the proxy (hop by hop), or that UAS would fail.
            assert (b.successful, b.failed, b.returncode) == (calls, 0, 0), b.summary()
            if first == "ringing":
                assert b.logs.count("CANCEL-BRANCH-OK") == calls, b.logs
                assert elapsed >= 2.0
        else:
            assert silent is not None
            # The silent hop saw INVITE retransmissions (same branch) and no CANCEL
            # (nothing to cancel without a provisional, RFC 3261 9.1), then nothing.
            got: list[bytes] = []
            while (d := silent.recv(0.2)) is not None:
                got.append(d)
            methods = [d.split(b" ", 1)[0] for d in got]
            assert set(methods) == {b"INVITE"}, methods
            by_call: dict[str, set[str]] = {}
            for d in got:
                by_call.setdefault(header(d, "Call-ID") or "", set()).add(
                    (header(d, "Via") or "").split("branch=")[1].split(";")[0]
                )
            assert len(by_call) == calls and all(len(b) == 1 for b in by_call.values())
            # T1 = 0.5 s: sent at 0, 0.5, 1.5 s, then the 2 s timeout stops it.
            assert len(got) <= 4 * calls, len(got)
            assert elapsed >= 2.0
        # ACK and BYE reached the second UAS by the Route set, in Rust.
        assert _app_seen(proxy) == {"app.invite": calls}
        assert proxy.alive()
    finally:
        second.kill()
        if busy is not None:
            busy.kill()
        if silent is not None:
            silent.close()


# 4 ---------------------------------------------------------------------------


def test_parallel_fork_first_200_wins(sipp: str, sipr_factory) -> None:
    """Fork to two UASes: A rings and answers 200 after 200 ms; B rings and must
    be CANCELled (200 for the CANCEL, 487, ACK). The caller's call completes
    (ACK and BYE reach A) and the caller never sees B's 487."""
    calls = 5
    a_port, b_port, uac_port = free_port(), free_port(), free_port()
    a = Sipp(sipp, "uas_rr_delayed.xml", a_port, calls=calls, timeout_s=30)
    b = Sipp(sipp, "uas_cancelled.xml", b_port, calls=calls, timeout_s=30)
    try:
        proxy = _proxy(
            sipr_factory,
            SIPR_TARGETS=f"sip:127.0.0.1:{a_port},sip:127.0.0.1:{b_port}",
            SIPR_FORK="1",
        )
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=10,
            timeout_s=30, extra=("-trace_msg",),
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        assert not _received(uac.workdir, r"^SIP/2\.0 [3-6]\d\d "), "a failure reached the UAC"
        # Both branches rang, and both 180s went upstream.
        assert len(_received(uac.workdir, r"^SIP/2\.0 180 ")) == 2 * calls
        ra = a.wait()
        assert (ra.successful, ra.failed, ra.returncode) == (calls, 0, 0), ra.summary()
        rb = b.wait()
        assert (rb.successful, rb.failed, rb.returncode) == (calls, 0, 0), rb.summary()
        assert rb.logs.count("CANCEL-BRANCH-OK") == calls, rb.logs
        assert _app_seen(proxy) == {"app.invite": calls}
        assert proxy.alive()
    finally:
        a.kill()
        b.kill()


# 5 ---------------------------------------------------------------------------


def test_packet_loss_10_percent(sipp: str, sipr_factory) -> None:
    """10 % loss on both SIPp sides (sent and received), 2,000 calls: all
    complete by retransmission, and none is duplicated: the UAS sees exactly
    2,000 calls and never an unexpected INVITE (a second INVITE transaction for
    a call carries a new branch), and the proxy started exactly one client
    transaction per INVITE and per BYE. RFC 3261 default timers (T1 = 500 ms)."""
    calls, rate = 2_000, 250
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(
        sipp, "uas_rr_lossy.xml", uas_port, calls=calls, timeout_s=90, recv_timeout_s=35,
        extra=("-lost", "10", "-default_behaviors", "all,-abortunexp"),
    )  # fmt: skip
    try:
        proxy = _proxy(sipr_factory, SIPR_TARGETS=f"sip:127.0.0.1:{uas_port}")
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=rate,
            timeout_s=90, recv_timeout_s=35, extra=("-lost", "10"),
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        # Every call completed at the UAC, so the UAS answered every BYE: its calls
        # only linger in timewait now. Read its counters once they cover that moment.
        done = time.time()
        deadline = time.monotonic() + 10
        while True:
            u = uas.live_stats()
            if u and float(u["CurrentTime"].split("\t")[-1]) > done + 0.5:
                break
            assert time.monotonic() < deadline, "no UAS statistics"
            time.sleep(0.2)
        created, failed = int(u["TotalCallCreated"]), int(u["FailedCall(C)"])
        assert (created, failed) == (calls, 0), u
        unexpected = re.findall(r"on unexpected message.*?, received '(\S+)", uas.logs())
        assert set(unexpected) <= {"ACK"}, unexpected  # a late ACK (after the BYE) is legal
        s = sipr_stats(proxy.tcp)
        # Forwarded = one client transaction per INVITE and per BYE, plus every
        # ACK (2xx ACKs are loose-routed statelessly, each copy forwarded).
        assert s["requests_forwarded"] - s["requests_in.ack"] == 2 * calls, s
        # Loss was recovered by retransmission, on both sides of the proxy.
        assert r.retransmissions > 0 and int(u["Retransmissions(C)"]) > 0, u
        assert s["retransmissions"] > 0, s
        print(f"\nloss: {calls} calls, UAC retrans {r.retransmissions}, UAS retrans "
              f"{u['Retransmissions(C)']}, proxy retrans {s['retransmissions']}, INVITEs "
              f"in {s['requests_in.invite']}, BYEs in {s['requests_in.bye']}, late ACKs "
              f"{len(unexpected)}")  # fmt: skip
        assert proxy.alive()
    finally:
        uas.kill()


# 7 ---------------------------------------------------------------------------


def _final(peer: UdpPeer, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = peer.recv(deadline - time.monotonic())
        if d is not None and (status_of(d) or 0) >= 200:
            return d
    raise AssertionError("no final response")


def test_max_forwards_zero_is_483(sipr_factory, udp_peer: UdpPeer) -> None:
    """An INVITE with Max-Forwards: 0 that the route relays is answered 483
    (statefully: 100, then 483 until our ACK)."""
    proxy = _proxy(sipr_factory, SIPR_TARGETS=f"sip:127.0.0.1:{free_port()}")
    invite = sip_request("INVITE", "sip:bob@127.0.0.1", port=udp_peer.port, max_forwards=0)
    udp_peer.send(invite, proxy.udp)
    resp = _final(udp_peer)
    assert status_of(resp) == 483, resp
    udp_peer.send(non2xx_ack(invite, resp), proxy.udp)
    # The ACK ends the 483's retransmission (Timer G); nothing else arrives.
    assert udp_peer.recv(1.2) is None
    assert proxy.alive()


def test_loop_back_to_itself_is_482(sipr_factory, udp_peer: UdpPeer) -> None:
    """A route that relays to the proxy's own address: the request comes back
    with our Via and the same loop hash (RFC 3261 16.3 step 4) and is refused
    482; the caller gets that 482 once its branch ends."""
    port = free_port()
    blackhole = free_port()
    proxy = sipr_factory(
        PROXY,
        listen=(f"udp:127.0.0.1:{port}", "tcp:127.0.0.1:0"),
        env={"SIPR_TARGETS": f"sip:127.0.0.1:{port}"},
    )
    invite = sip_request(
        "INVITE", f"sip:bob@127.0.0.1:{blackhole}", port=udp_peer.port, max_forwards=70
    )
    udp_peer.send(invite, proxy.udp)
    resp = _final(udp_peer)
    assert status_of(resp) == 482, resp
    # It came back exactly once: one 482, not a 483 after 70 hops.
    s = sipr_stats(proxy.tcp)
    assert s["requests_in.invite"] == 2, s
    udp_peer.send(non2xx_ack(invite, resp), proxy.udp)
    assert udp_peer.recv(1.2) is None
    assert proxy.alive()


# 8 ---------------------------------------------------------------------------


def _cpu_ms_per_s(pid: int, seconds: float) -> tuple[float, float]:
    """(schedstat ms/s, utime+stime ms/s) over `seconds` of wall time."""
    ns0, tk0, t0 = cpu_ns(pid), cpu_ticks_ms(pid), time.monotonic()
    time.sleep(seconds)
    ns1, tk1, t1 = cpu_ns(pid), cpu_ticks_ms(pid), time.monotonic()
    wall = t1 - t0
    return (ns1 - ns0) / 1e6 / wall, (tk1 - tk0) / wall


def test_idle_cpu_before_and_after_10k_transactions(sipp: str, sipr_factory) -> None:
    """Idle, and again once 10,000 transactions (5,000 calls: INVITE + BYE, each
    a server and a client transaction) have expired, the proxy burns < 1 ms CPU
    per second. T1 = 50 ms so every transaction ends within 64*T1 = 3.2 s."""
    calls = 5_000
    uas_port, uac_port = free_port(), free_port()
    proxy = _proxy(sipr_factory, SIPR_T1="0.05", SIPR_TARGETS=f"sip:127.0.0.1:{uas_port}")
    pid = proxy.proc.pid
    wait_drained(proxy.tcp, 10)
    idle, idle_ticks = _cpu_ms_per_s(pid, 5.0)

    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=60)
    try:
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=1000,
            timeout_s=60,
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()
    finally:
        uas.kill()
    s = wait_drained(proxy.tcp, 20)
    assert s["requests_in.invite"] >= calls and s["requests_in.bye"] >= calls, s
    after, after_ticks = _cpu_ms_per_s(pid, 5.0)
    print(f"\nidle CPU: {idle:.3f} ms/s (ticks {idle_ticks:.1f}); after {2 * calls} "
          f"transactions: {after:.3f} ms/s (ticks {after_ticks:.1f})")  # fmt: skip
    assert idle < 1.0, f"idle: {idle:.3f} ms CPU per second"
    assert after < 1.0, f"after traffic: {after:.3f} ms CPU per second"
    assert proxy.alive()
