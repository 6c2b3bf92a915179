"""Dialogs and CDRs with real phones (issue 18, points 1 and 5): two baresip
softphones call through tests/apps/dialog_proxy.py. A call the caller hangs
up gets a CDR whose talk time is the one the phones saw; `dlg.end` ends a
call with BYEs that both phones accept as their own dialog's (CALL_CLOSED
on both sides), and its CDR says "admin"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.baresip import Baresip, BaresipError
from tests.conftest import ROOT
from tests.integration.ctlkit import rpc
from tests.sipp.dialogkit import sqlite_rows, wait_for

APP = ROOT / "tests" / "apps" / "dialog_proxy.py"


def _cdrs(db: Path) -> list[tuple[object, ...]]:
    return sqlite_rows(
        db, "SELECT call_id, caller, end_reason, disposition, duration FROM cdr ORDER BY end_time"
    )


def test_real_phones_get_cdrs_and_are_hung_up_by_dlg_end(sipr_factory, tmp_path: Path) -> None:
    phones: list[Baresip] = []
    try:
        # bob first: the proxy sends every call to him. No registration
        # (regint=0): bob's "registrar" is never used, alice's is sipr as
        # her outbound proxy.
        bob = Baresip(
            "bob", "x", registrar=("127.0.0.1", 9), workdir=tmp_path / "bob", regint=0
        )  # fmt: skip
        phones.append(bob.start())
        db = tmp_path / "acc.db"
        proxy = sipr_factory(
            APP,
            env={
                "XDG_DATA_HOME": str(tmp_path / "data"),
                "SIPR_ACC": f"sqlite:///{db}",
                "SIPR_TARGET": f"sip:127.0.0.1:{bob.sip_port}",
            },
        )
        alice = Baresip("alice", "x", registrar=proxy.udp, workdir=tmp_path / "alice", regint=0)
        phones.append(alice.start())
        bob_uri = f"sip:bob@127.0.0.1:{bob.sip_port}"

        def call() -> str:
            # Events stay recorded: wait for the ones after this dial.
            seen = {p.user: len(p.events) for p in (alice, bob)}
            alice.dial(bob_uri)
            bob.wait_event("CALL_INCOMING", since=seen["bob"])
            bob.accept()
            up = [p.wait_event("CALL_ESTABLISHED", since=seen[p.user]) for p in (alice, bob)]
            assert up[0]["id"] == up[1]["id"]
            return str(up[0]["id"])

        # 1. alice hangs up after ~1.5 s: CDR "caller_bye", its duration the
        # time the phones had the call up.
        first = call()
        established = time.monotonic()
        with pytest.raises(BaresipError, match="no CALL_CLOSED"):
            alice.wait_event("CALL_CLOSED", timeout=1.5)
        alice.hangup()
        bob.wait_event("CALL_CLOSED", id=first)
        talked = time.monotonic() - established
        row = wait_for(lambda: _cdrs(db), 10, "the first CDR")
        (call_id, caller, reason, disposition, duration) = row[0]
        assert (call_id, reason, disposition) == (first, "caller_bye", "answered"), row
        assert str(caller).startswith("sip:alice@"), caller
        # Both measured between the same two messages, give or take this
        # test's own reaction to baresip's events.
        print(f"\nbaresip call: CDR duration {duration:.3f} s, the test saw {talked:.3f} s")
        assert abs(float(str(duration)) - talked) < 0.25, (duration, talked)

        # 2. dlg.end: sipr's BYEs end the call on both phones.
        second = call()
        (live,) = rpc(proxy.ctl, "dlg.list")
        assert live["call_id"] == second and live["state"] == "confirmed", live
        assert rpc(proxy.ctl, "dlg.end", live["id"]) == {"id": live["id"], "ended": True}
        for p in (alice, bob):
            p.wait_event("CALL_CLOSED", id=second)
        rows = wait_for(lambda: len(_cdrs(db)) == 2 and _cdrs(db), 10, "the second CDR")
        assert rows[1][0] == second and rows[1][2:4] == ("admin", "answered"), rows
        assert rpc(proxy.ctl, "dlg.list") == []
        # The BYEs got 200s from the phones: a BYE a phone refused (wrong
        # tags, CSeq or Request-URI) would have left its side up.
        for p in (alice, bob):
            bye_ok = [
                text
                for _, _, text in p.sip_messages()
                if text.startswith("SIP/2.0 200") and "BYE" in text.split("CSeq:", 1)[1][:20]
                and second in text
            ]  # fmt: skip
            assert bye_ok, p.trace()[-3000:]
    finally:
        for p in phones:
            p.stop()
