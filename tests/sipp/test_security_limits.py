"""Issue 17 acceptance 3: rate limits from Python (`sipr.limits`, Kamailio
`ratelimit`), shared through Redis by two sipr processes, and the core's
global per-method limits (503 + Retry-After before Python)."""

from __future__ import annotations

import csv
import time

from tests.conftest import free_port, header, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.regkit import RedisServer
from tests.sipp.securitykit import UdpFrom, sipp_at, start, stats

RATE = 5


def _counts(workdir) -> dict[str, int]:  # type: ignore[no-untyped-def]
    for f in workdir.glob("*_counts.csv"):
        rows = list(csv.reader(f.open(), delimiter=";"))
        return {k: int(v) for k, v in zip(rows[0], rows[-1], strict=False) if v.isdigit()}
    return {}


def test_five_calls_per_second_per_user(sipp: str, sipr_factory) -> None:
    uas_port = free_port()
    sipr = start(sipr_factory, {"calls_per_s": RATE, "target": f"sip:127.0.0.1:{uas_port}"})
    uas = sipp_at(sipp, "uas_answer.xml", "127.0.0.1", port=uas_port, calls=50, timeout_s=40)
    began = time.monotonic()
    uac = sipp_at(
        sipp, "uac_call_or_503.xml", "127.0.0.2", calls=50, rate=25, remote=sipr.udp,
        timeout_s=40, extra=("-trace_counts",),
    )  # fmt: skip
    try:
        result = uac.wait()
        spent = time.monotonic() - began
    finally:
        uac.kill()
        uas.kill()
    counts = _counts(uac.workdir)
    limited = counts.get("3_503_Recv", 0)
    passed = counts.get("4_200_Recv", 0)
    takes = rpc(sipr.ctl, "test.takes")
    first, last = takes[0][0], takes[-1][0]
    span = last - first
    per_second = [
        sum(ok for t, ok in takes if first + k <= t < first + k + 1) for k in range(int(span) + 1)
    ]
    print(
        f"\n50 INVITEs at 25/s from alice: {passed} through, {limited} 503 in {spent:.1f} s; "
        f"arrivals over {span:.2f} s; through per second {per_second}"
    )
    # Every call ends well: completed, or 503 with a Retry-After (checked by SIPp).
    assert result.successful == 50 and result.failed == 0, result.summary()
    assert passed + limited == 50 and len(takes) == 50
    assert sum(ok for _, ok in takes) == passed
    # A full bucket of 5, then 5 a second over the span the INVITEs arrived in.
    assert abs(passed - (RATE + RATE * span)) <= 1.5, (passed, span)
    # Second by second: the bucket plus a second's refill in the first, then 5.
    assert per_second[0] <= 2 * RATE + 1, per_second
    assert all(n <= RATE + 1 for n in per_second[1:]), per_second
    assert all(n >= RATE - 1 for n in per_second[1:-1]), per_second


def test_limits_in_redis_are_shared(sipr_factory) -> None:
    """Two sipr processes with the same Redis: one budget of 5 for alice."""
    redis = RedisServer()
    try:
        config = {"calls_per_s": RATE, "target": "sip:x", "limits": redis.url()}
        a, b = start(sipr_factory, config), start(sipr_factory, config)
        ua = UdpFrom("127.0.0.2")
        try:
            answers = [ua.ask(server.udp, "MESSAGE") for server in (a, b) * 6]
        finally:
            ua.close()
    finally:
        redis.stop()
    # 12 MESSAGEs within well under a second: the 5 tokens, maybe one more.
    assert answers.count(200) in (5, 6), answers
    assert answers.count(503) == 12 - answers.count(200)
    assert set(answers[:2]) == {200}, "both instances take from the bucket"


def test_method_limit_is_answered_by_the_core(sipr_factory) -> None:
    sipr = start(sipr_factory, {"target": "sip:x", "method_limits": {"OPTIONS": [3, 10.0]}})
    ua = UdpFrom("127.0.0.2")
    try:
        got = []
        for _ in range(8):
            ua.request(sipr.udp, "OPTIONS")
            resp = ua.recv(2.0)
            got.append((status_of(resp), header(resp, "Retry-After") if resp else None))
    finally:
        ua.close()
    assert [s for s, _ in got] == [200] * 3 + [503] * 5, got
    # 10 s per 3 tokens: the next one in ~3.3 s, rounded up.
    assert {ra for s, ra in got if s == 503} == {"4"}, got
    assert stats(sipr, "security.")["security.method_limited"] == 5
