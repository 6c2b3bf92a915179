"""Issue 17 acceptance 3: rate limits from Python (`sipr.limits`, Kamailio
`ratelimit`), shared through Redis by two sipr processes, and the core's
global per-method limits (503 + Retry-After before Python)."""

from __future__ import annotations

import csv
import itertools

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


def _burst_of_fifty(sipp: str, sipr_factory, burst: int | None):  # type: ignore[no-untyped-def]
    """50 INVITEs from alice at 25/s against `take(rate=5, per=1, burst=burst)`:
    (through, 503s, takes as [sipr's monotonic time, taken], SIPp's result)."""
    uas_port = free_port()
    config = {"calls_per_s": RATE, "calls_burst": burst, "target": f"sip:127.0.0.1:{uas_port}"}
    sipr = start(sipr_factory, config)
    uas = sipp_at(sipp, "uas_answer.xml", "127.0.0.1", port=uas_port, calls=50, timeout_s=40)
    uac = sipp_at(
        sipp, "uac_call_or_503.xml", "127.0.0.2", calls=50, rate=25, remote=sipr.udp,
        timeout_s=40, extra=("-trace_counts",),
    )  # fmt: skip
    try:
        result = uac.wait()
    finally:
        uac.kill()
        uas.kill()
    counts = _counts(uac.workdir)
    takes = rpc(sipr.ctl, "test.takes")
    # Every call ends well: completed, or 503 with a Retry-After (checked by SIPp).
    assert result.successful == 50 and result.failed == 0, result.summary()
    passed, limited = counts.get("4_200_Recv", 0), counts.get("3_503_Recv", 0)
    assert passed + limited == 50 and len(takes) == 50
    assert sum(ok for _, ok in takes) == passed
    return passed, limited, takes


def _per_second(takes: list[list[float]]) -> tuple[float, list[int]]:
    """The span of the arrivals and how many went through in each second of it
    (counted on sipr's clock, from the first arrival)."""
    first, last = takes[0][0], takes[-1][0]
    span = last - first
    return span, [
        sum(int(ok) for t, ok in takes if first + k <= t < first + k + 1)
        for k in range(int(span) + 1)
    ]


def test_five_calls_per_second_per_user(sipp: str, sipr_factory) -> None:
    """A bucket of one token refilled 5 times a second: 5 through in every
    second, never more, the rest 503 + Retry-After."""
    passed, limited, takes = _burst_of_fifty(sipp, sipr_factory, burst=1)
    span, per_second = _per_second(takes)
    print(f"\nburst 1: {passed} through, {limited} 503 over {span:.2f} s; per second {per_second}")
    # Passes are at least 1/5 s apart, so no second holds more than 5 ...
    assert all(n <= RATE for n in per_second), per_second
    ok_times = [t for t, ok in takes if ok]
    # (sipr's clock read just after each take: allow 10 ms of scheduling)
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(ok_times)), ok_times
    # ... and with INVITEs arriving 25 a second, every whole second gets its 5
    # (or 4: a token that comes due between two INVITEs waits up to 40 ms for
    # the next, and a bucket of one cannot bank that time).
    assert all(n >= RATE - 1 for n in per_second[:-1]), per_second
    assert (RATE - 1) * span <= passed <= 1 + RATE * span, (passed, span)


def test_a_full_bucket_lets_a_burst_through_first(sipp: str, sipr_factory) -> None:
    """The default bucket holds `rate` tokens: a burst of 5 at once, then 5 a
    second (Kamailio's ratelimit with a bucket, not a fixed window)."""
    passed, limited, takes = _burst_of_fifty(sipp, sipr_factory, burst=None)
    span, per_second = _per_second(takes)
    print(f"\nburst 5: {passed} through, {limited} 503 over {span:.2f} s; per second {per_second}")
    assert abs(passed - (RATE + RATE * span)) <= 1.5, (passed, span)
    assert per_second[0] <= 2 * RATE + 1, per_second
    assert all(n <= RATE + 1 for n in per_second[1:]), per_second


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
