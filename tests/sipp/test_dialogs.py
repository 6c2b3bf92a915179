"""Acceptance (issue 18, points 1, 2, 3, 5): dialogs tracked in the core, call
limits by profile, dialog timeout and keepalive ending a call whose callee
vanished, `sipr ctl dlg.*`, and the accounting records (CDRs, request
records, missed calls) in SQLite. The proxy is tests/apps/dialog_proxy.py;
ACK and BYE carry its Record-Route and are routed in Rust."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, header
from tests.integration.ctlkit import rpc, sipr_ctl
from tests.sipp.dialogkit import Caller, sipp_pauses, sipp_trace, sqlite_rows, wait_for
from tests.sipp.peers import Sipp

APP = ROOT / "tests" / "apps" / "dialog_proxy.py"

pytestmark = pytest.mark.sipp


def _proxy(sipr_factory, tmp_path: Path, uas_port: int, **env: str):  # type: ignore[no-untyped-def]
    db = tmp_path / "acc.db"
    proxy = sipr_factory(
        APP,
        env={
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "SIPR_ACC": f"sqlite:///{db}",
            "SIPR_TARGET": f"sip:127.0.0.1:{uas_port}",
            **env,
        },
    )
    return proxy, db


def _count(db: Path, sql: str, *args: object) -> int:
    rows = sqlite_rows(db, sql, *args)
    return int(rows[0][0]) if rows else 0


# 1 ---------------------------------------------------------------------------


def test_thousand_calls_give_cdrs_request_records_and_missed_calls(
    sipp: str, sipr_factory, tmp_path: Path
) -> None:
    """1,000 SIPp calls with 2 s of talk: 1,000 CDRs, each duration within
    0.1 s of the pause, and INVITE, ACK and BYE records with their codes; a
    call answered 486 and a cancelled one are missed calls with their codes."""
    calls, rate, talk_ms = 1000, 250, 2000
    uas_port, busy_port, ring_port = free_port(), free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=60, extra=("-trace_msg",))
    busy = Sipp(sipp, "uas_busy.xml", busy_port, calls=1, timeout_s=30)
    ring = Sipp(sipp, "uas_cancelled.xml", ring_port, calls=1, timeout_s=30)
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port)
        uac = Sipp(
            sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=rate,
            timeout_s=60, extra=("-d", str(talk_ms), "-trace_msg"),
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()

        busy_call = Caller(proxy.udp, user="carol")
        assert busy_call.invite(extra=f"X-Target: sip:127.0.0.1:{busy_port}\r\n") == 486
        ringing = Caller(proxy.udp, user="dave")
        ringing.invite(wait=False, extra=f"X-Target: sip:127.0.0.1:{ring_port}\r\n")
        ringing.wait_provisional(180)
        assert ringing.cancel() == 487

        wait_for(
            lambda: (
                _count(db, "SELECT count(*) FROM cdr") == calls + 2
                and _count(db, "SELECT count(*) FROM acc") == 3 * calls + 2
            ),
            30,
            "every CDR and request record in SQLite",
        )
    finally:
        for p in (uas, busy, ring):
            p.kill()

    answered = sqlite_rows(
        db,
        "SELECT duration, code, end_reason, extra, call_id, answer_time, end_time"
        " FROM cdr WHERE disposition = 'answered'",
    )
    assert len(answered) == calls
    _check_cdr_times(answered, uac.workdir, uas.workdir, talk_ms / 1000)
    assert {(row[1], row[2]) for row in answered} == {(200, "caller_bye")}
    assert {row[3] for row in answered} == {'{"customer":"acme","user":"sipp"}'}
    assert _count(db, "SELECT count(DISTINCT call_id) FROM cdr") == calls + 2

    records = dict(
        ((m, c), n)
        for m, c, n in sqlite_rows(db, "SELECT method, code, count(*) FROM acc GROUP BY 1, 2")
    )
    assert records == {
        ("INVITE", 200): calls,
        ("ACK", 200): calls,
        ("BYE", 200): calls,
        ("INVITE", 486): 1,
        ("INVITE", 487): 1,
    }, records
    assert _count(db, "SELECT count(*) FROM acc WHERE failed = 1") == 2
    assert _count(db, "SELECT count(*) FROM acc WHERE from_user = 'sipp' AND to_user = 'service'")
    missed = sqlite_rows(db, "SELECT disposition, code, reason FROM missed_calls ORDER BY code")
    assert missed == [("busy", 486, "Busy Here"), ("cancelled", 487, "Request Terminated")], missed
    stats = rpc(proxy.ctl, "dlg.stats")
    assert stats["active"] == 0 and stats["created"] == calls + 2, stats
    assert stats["ended.bye"] == calls and stats["failed"] == 2, stats


def _check_cdr_times(
    answered: list[tuple[Any, ...]], uac_dir: Path, uas_dir: Path, talk: float
) -> None:
    """Each CDR's answer and end times are the events themselves: the answer
    lies between the callee's 200 and the caller's receipt of it, the end
    between the caller's BYE and its receipt of the BYE's 200 (the SIPp
    traces, same wall clock). The duration's distance from the pause SIPp
    made (its ACK to its BYE) is then the time the 200 and the BYE spent
    in flight and in queues, which the figures show."""
    uac, uas = sipp_trace(uac_dir), sipp_trace(uas_dir)
    pauses = sipp_pauses(uac_dir)
    assert len(pauses) == len(answered)
    # SIPp stamps its trace after it sends or reads a message, so a stamp is
    # never early: the upper bounds hold exactly, the lower ones within
    # SIPp's own lag (a wrong time, taken at the INVITE, the ACK or the
    # transaction's end, is off by far more).
    lag, rounding = 0.05, 0.001
    late_answer, late_end, off, nominal, early = [], [], [], [], 0.0
    for duration, *_, cid, answer_time, end_time in answered:
        answer_lo, answer_hi = uas[(cid, "sent 200 INVITE")], uac[(cid, "received 200 INVITE")]
        end_lo, end_hi = uac[(cid, "sent BYE")], uac[(cid, "received 200 BYE")]
        assert answer_lo - lag <= answer_time <= answer_hi + rounding, (
            cid, answer_lo, answer_time, answer_hi,
        )  # fmt: skip
        assert end_lo - lag <= end_time <= end_hi + rounding, (cid, end_lo, end_time, end_hi)
        early = max(early, answer_lo - answer_time, end_lo - end_time)
        assert abs(duration - (end_time - answer_time)) < 1e-3
        late_answer.append(answer_hi - answer_time)
        late_end.append(end_time - end_lo)
        off.append(abs(duration - pauses[cid]))
        nominal.append(abs(duration - talk))
    n = len(off)
    for xs in (off, late_answer, late_end, nominal):
        xs.sort()

    def ms(xs: list[float]) -> str:
        median, p99, worst = (xs[i] * 1000 for i in (n // 2, n * 99 // 100, -1))
        return f"median {median:.1f} p99 {p99:.1f} worst {worst:.1f} ms"

    print(
        f"\nCDR duration - SIPp's pause: {ms(off)}; - nominal: {ms(nominal)}\n"
        f"200 relayed -> caller got it: {ms(late_answer)}\n"
        f"caller sent BYE -> sipr ended the dialog: {ms(late_end)}; "
        f"SIPp's stamp lag seen: {early * 1000:.1f} ms"
    )
    # Issue 18: each duration within 0.1 s of the pause SIPp made (a quiet box
    # shows single milliseconds; only a starved SIPp reads its 200 late).
    assert off[-1] < 0.1, (off[n // 2], off[-1])
    assert nominal[n // 2] < 0.1, nominal[n // 2]


# 2 ---------------------------------------------------------------------------


def test_concurrent_call_limit_per_user(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """alice may hold 2 calls: a third INVITE gets 486 while both are up (bob
    is not limited by alice's count); once one hangs up a new call passes."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=4, timeout_s=60)
    callers: list[Caller] = []
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_LIMIT="2")
        first, second, third = (Caller(proxy.udp, user="alice") for _ in range(3))
        callers += [first, second, third]
        assert first.invite() == 200
        assert second.invite() == 200
        assert rpc(proxy.ctl, "dlg.profiles") == [
            {"profile": "user", "value": "alice", "dialogs": 2}
        ]
        assert third.invite() == 486
        bob = Caller(proxy.udp, user="bob")
        callers.append(bob)
        assert bob.invite() == 200
        assert first.bye() == 200
        fourth = Caller(proxy.udp, user="alice")
        callers.append(fourth)
        assert fourth.invite() == 200
        for c in (second, bob, fourth):
            assert c.bye() == 200
        assert uas.wait().successful == 4
        assert rpc(proxy.ctl, "dlg.profiles") == []
        # The refused INVITE never became a dialog.
        wait_for(lambda: _count(db, "SELECT count(*) FROM cdr") == 4, 10, "4 CDRs")
    finally:
        uas.kill()
        for c in callers:
            c.close()


def test_full_dialog_table_refuses_new_dialogs(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """`app.dialogs.max_dialogs` bounds the table: track_dialog raises
    DialogError beyond it (the app answers 503), and room comes back."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=2, timeout_s=30)
    callers = [Caller(None, user=u) for u in ("alice", "bob", "carol")]  # type: ignore[arg-type]
    try:
        proxy, _db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_MAX_DIALOGS="1")
        for c in callers:
            c.proxy = proxy.udp
        assert callers[0].invite() == 200
        assert callers[1].invite() == 503
        assert rpc(proxy.ctl, "dlg.stats")["refused"] == 1
        assert callers[0].bye() == 200
        assert callers[2].invite() == 200
        assert callers[2].bye() == 200
    finally:
        uas.kill()
        for c in callers:
            c.close()


def test_reload_keeps_calls_and_accounting(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """A route-script reload keeps the dialogs (they live in the core) and the
    new app's Accounting takes over from the old one's."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=2, timeout_s=30)
    first, second = Caller(None, user="alice"), Caller(None, user="bob")  # type: ignore[arg-type]
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_LIMIT="5")
        first.proxy = second.proxy = proxy.udp
        assert first.invite() == 200
        assert rpc(proxy.ctl, "app.reload")["reloaded"] is True
        assert [d["call_id"] for d in rpc(proxy.ctl, "dlg.list")] == [first.call_id]
        assert first.bye() == 200
        assert second.invite() == 200
        assert second.bye() == 200
        wait_for(lambda: _count(db, "SELECT count(*) FROM cdr") == 2, 10, "both CDRs")
        assert _count(db, "SELECT count(*) FROM acc") == 6
    finally:
        uas.kill()
        first.close()
        second.close()


# 3 ---------------------------------------------------------------------------


def test_timeout_ends_a_call_whose_callee_vanished(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """The SIPp UAS is killed mid-call; with a 5 s dialog timeout the caller gets
    a BYE from sipr (as from the callee) and the CDR ends with reason timeout."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=1, timeout_s=30)
    caller = None
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_DLG_TIMEOUT="5")
        caller = Caller(proxy.udp, user="alice")
        assert caller.invite() == 200
        answered = time.monotonic()
        uas.kill()
        bye = caller.expect("BYE", timeout=12)
        waited = time.monotonic() - answered
        assert 4.5 <= waited < 12, waited
        # Sent on the callee's behalf: its tag in From, ours in To, a CSeq of
        # the callee's own numbering, through our Via.
        callee_tag = caller.to.split("tag=", 1)[1]
        assert f"tag={callee_tag}" in (header(bye, "From") or ""), bye
        assert f"tag={caller.tag}" in (header(bye, "To") or ""), bye
        assert header(bye, "CSeq") == "1 BYE", bye
        assert "branch=z9hG4bKdlg" in (header(bye, "Via") or ""), bye
        row = wait_for(
            lambda: sqlite_rows(db, "SELECT end_reason, disposition, duration FROM cdr"),
            10,
            "the CDR",
        )
        (end_reason, disposition, duration) = row[0]
        assert (end_reason, disposition) == ("timeout", "answered")
        assert 4.5 <= duration <= waited + 0.5, duration
        assert rpc(proxy.ctl, "dlg.stats")["ended.timeout"] == 1
    finally:
        uas.kill()
        if caller is not None:
            caller.close()


def test_keepalive_failure_ends_the_call(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """Kamailio dlg_keepalive: OPTIONS every second to both sides; the callee
    stops answering (killed), so the next round ends the call with BYEs."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=1, timeout_s=30)
    caller = None
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_DLG_KEEPALIVE="1")
        caller = Caller(proxy.udp, user="alice")
        assert caller.invite() == 200
        uas.kill()
        caller.expect("BYE", timeout=10)
        options = [m for m in caller.received if m.startswith(b"OPTIONS ")]
        assert options, "the caller was sent keepalives (and answered them)"
        assert header(options[0], "CSeq") == "1 OPTIONS", options[0]
        row = wait_for(lambda: sqlite_rows(db, "SELECT end_reason FROM cdr"), 10, "the CDR")
        assert row == [("keepalive",)]
        stats = rpc(proxy.ctl, "dlg.stats")
        assert stats["ended.keepalive"] == 1 and stats["keepalives_sent"] >= 2, stats
    finally:
        uas.kill()
        if caller is not None:
            caller.close()


def test_reinvite_refreshes_the_lifetime_and_is_accounted(
    sipp: str, sipr_factory, tmp_path: Path
) -> None:
    """A 2xx to a re-INVITE restarts the dialog's lifetime; the re-INVITE and
    its ACK are accounted with the dialog's other requests."""
    uas_port = free_port()
    uas = Sipp(sipp, "uas_reinvite.xml", uas_port, calls=1, timeout_s=30)
    caller = None
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port, SIPR_DLG_TIMEOUT="30")
        caller = Caller(proxy.udp, user="alice")
        assert caller.invite() == 200
        (d,) = rpc(proxy.ctl, "dlg.list")
        time.sleep(2.2)  # let the lifetime run down a little
        before = rpc(proxy.ctl, "dlg.get", d["id"])["timeout_in"]
        assert before <= 28, before
        assert caller.request("INVITE") == 200
        after = rpc(proxy.ctl, "dlg.get", d["id"])["timeout_in"]
        assert after >= 29, (before, after)
        assert caller.bye() == 200
        assert uas.wait().successful == 1
        wait_for(lambda: _count(db, "SELECT count(*) FROM acc") == 5, 10, "5 request records")
        methods = sqlite_rows(db, "SELECT method, code, to_tag != '' FROM acc ORDER BY time")
        assert methods == [
            ("INVITE", 200, 1), ("ACK", 200, 1), ("INVITE", 200, 1), ("ACK", 200, 1),
            ("BYE", 200, 1),
        ], methods  # fmt: skip
    finally:
        uas.kill()
        if caller is not None:
            caller.close()


def test_forked_call_confirms_the_answering_fork(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """A parallel fork to two UASes that both ring: two early dialogs; the one
    that answers confirms the dialog (its tag, its address in the CDR), the
    other is cancelled."""
    answering, ringing = free_port(), free_port()
    a = Sipp(sipp, "uas_rr.xml", answering, calls=1, timeout_s=30)
    b = Sipp(sipp, "uas_cancelled.xml", ringing, calls=1, timeout_s=30)
    caller = None
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, answering)
        caller = Caller(proxy.udp, user="alice")
        targets = f"sip:127.0.0.1:{ringing},sip:127.0.0.1:{answering}"
        assert caller.invite(extra=f"X-Target: {targets}\r\n") == 200
        assert b.wait().successful == 1  # it got its CANCEL and answered 487
        (d,) = rpc(proxy.ctl, "dlg.list")
        assert d["state"] == "confirmed"
        assert caller.bye() == 200
        assert a.wait().successful == 1
        row = wait_for(
            lambda: sqlite_rows(db, "SELECT to_tag, destination, disposition FROM cdr"),
            10,
            "the CDR",
        )
        callee_tag = caller.to.split("tag=", 1)[1]
        assert row == [(callee_tag, f"127.0.0.1:{answering}", "answered")], row
    finally:
        for p in (a, b):
            p.kill()
        if caller is not None:
            caller.close()


# 5 ---------------------------------------------------------------------------


def test_ctl_lists_live_calls_and_ends_one(sipp: str, sipr_factory, tmp_path: Path) -> None:
    """`sipr ctl dlg.list` shows the calls of a running SIPp load (caller,
    callee, state, age); `dlg.end` ends one with a BYE to each side."""
    calls = 10
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls + 1, timeout_s=60)
    uac = None
    caller = None
    try:
        proxy, db = _proxy(sipr_factory, tmp_path, uas_port)
        uac = Sipp(
            sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=20,
            timeout_s=60, extra=("-d", "30000"),
        )  # fmt: skip
        caller = Caller(proxy.udp, user="alice")
        assert caller.invite() == 200
        wait_for(lambda: rpc(proxy.ctl, "dlg.stats")["confirmed"] == calls + 1, 20, "all calls up")
        out = sipr_ctl("--ctl", str(proxy.ctl), "dlg.list")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert lines[0].split()[:5] == ["ID", "STATE", "CALLER", "CALLEE", "AGE"], lines[0]
        assert len(lines) == calls + 2, out.stdout
        assert sum("confirmed" in ln and "sip:sipp@" in ln for ln in lines) == calls
        rows = json.loads(sipr_ctl("--ctl", str(proxy.ctl), "--json", "dlg.list").stdout)
        (mine,) = [r for r in rows if r["call_id"] == caller.call_id]
        assert mine["caller"].startswith("sip:alice@") and mine["age"] >= 0
        ended = sipr_ctl("--ctl", str(proxy.ctl), "dlg.end", mine["id"])
        assert ended.returncode == 0, ended.stderr
        caller.expect("BYE", timeout=5)
        # The callee (the SIPp UAS) got its BYE too: that call completed there.
        wait_for(lambda: int(uas.live_stats().get("SuccessfulCall(C)", 0) or 0) >= 1, 10, "UAS BYE")
        assert len(rpc(proxy.ctl, "dlg.list")) == calls
        again = sipr_ctl("--ctl", str(proxy.ctl), "dlg.end", mine["id"])
        assert again.returncode == 1 and "no confirmed dialog" in again.stderr
        row = wait_for(
            lambda: sqlite_rows(db, "SELECT end_reason FROM cdr WHERE call_id = ?", caller.call_id),
            10,
            "the CDR",
        )
        assert row == [("admin",)]
        assert rpc(proxy.ctl, "dlg.stats")["ended.admin"] == 1
    finally:
        for p in (uac, uas):
            if p is not None:
                p.kill()
        if caller is not None:
            caller.close()
