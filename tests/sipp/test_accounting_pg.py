"""Acceptance (issue 18, point 4): accounting to a real PostgreSQL (Debian's
15, a private cluster on a free port): the 1,000 calls land once each while
the database is stopped for 10 s mid-run; a SIGTERM of sipr mid-run, with
the database down, loses no record either (they wait in the spool and the
next start writes them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.sipp.dialogkit import postgres_cluster, wait_for
from tests.sipp.peers import Sipp

APP = ROOT / "tests" / "apps" / "dialog_proxy.py"

pytestmark = pytest.mark.sipp


def _count(pg, sql: str) -> int:  # type: ignore[no-untyped-def]
    rows = pg.query(sql)
    return int(rows[0][0]) if rows else -1


def _env(tmp_path: Path, pg, uas_port: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "SIPR_ACC": pg.url,
        "SIPR_TARGET": f"sip:127.0.0.1:{uas_port}",
    }


def test_postgres_outage_mid_run_loses_and_duplicates_nothing(
    sipp: str, sipr_factory, tmp_path: Path
) -> None:
    calls, rate = 1000, 200
    with postgres_cluster() as pg:
        uas_port = free_port()
        uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=90)
        try:
            proxy = sipr_factory(APP, env=_env(tmp_path, pg, uas_port))
            uac = Sipp(
                sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=rate,
                timeout_s=90, extra=("-d", "2000"),
            )  # fmt: skip
            # Some records land first, then the database goes away for 10 s.
            wait_for(lambda: _count(pg, "SELECT count(*) FROM cdr") > 0, 20, "first CDRs")
            before = _count(pg, "SELECT count(*) FROM cdr")
            pg.stop()
            stopped = time.monotonic()
            r = uac.wait()
            assert (r.successful, r.failed) == (calls, 0), (
                f"{r.summary()}\nUAS: {uas.live_stats()}\nsipr: {proxy.log()[-3000:]}"
            )
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
            pg.start()
            restarted = time.monotonic()
            wait_for(
                lambda: (
                    _count(pg, "SELECT count(*) FROM cdr") == calls
                    and _count(pg, "SELECT count(*) FROM acc") == 3 * calls
                ),
                60,
                "every record in PostgreSQL",
            )
            print(
                f"\n{before} CDRs before the outage, down "
                f"{restarted - stopped:.1f} s; all {calls} CDRs and {3 * calls} request records "
                f"in {time.monotonic() - restarted:.1f} s after the restart"
            )
            assert uas.wait().successful == calls
        finally:
            uas.kill()
        assert _count(pg, "SELECT count(DISTINCT call_id) FROM cdr") == calls
        assert _count(pg, "SELECT count(DISTINCT (call_id, method)) FROM acc") == 3 * calls
        assert _count(pg, "SELECT count(*) FROM cdr WHERE disposition = 'answered'") == calls
        # Times as written (their accuracy against SIPp: test_dialogs, point 1).
        assert (
            _count(
                pg, "SELECT count(*) FROM cdr WHERE abs(duration - (end_time - answer_time)) > 1e-3"
            )
            == 0
        )
        median = pg.query("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) FROM cdr")
        assert abs(float(median[0][0]) - 2) < 0.1, median
        assert pg.query("SELECT extra->>'customer' FROM cdr LIMIT 1") == [("acme",)]
        # `sipr cdr export` reads them back from PostgreSQL.
        out = subprocess.run(
            [sys.executable, "-m", "sipr", "cdr", "export", "--db", pg.url, "--since", "1h",
             "--format", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        exported = json.loads(out.stdout)
        assert len({r["call_id"] for r in exported}) == calls, len(exported)
        assert {r["disposition"] for r in exported} == {"answered"}
        log = proxy.log()
        assert "writing to postgresql://" in log and "is back" in log, log[-3000:]


def test_sigterm_mid_run_with_the_database_down_loses_nothing(
    sipp: str, sipr_factory, tmp_path: Path
) -> None:
    calls, rate = 1000, 200
    with postgres_cluster() as pg:
        uas_port = free_port()
        uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=90)
        uac = None
        try:
            env = _env(tmp_path, pg, uas_port)
            proxy = sipr_factory(APP, env=env)
            uac = Sipp(
                sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=rate,
                timeout_s=60, extra=("-d", "2000"),
            )  # fmt: skip
            wait_for(lambda: _count(pg, "SELECT count(*) FROM cdr") > 0, 20, "first CDRs")
            pg.stop()
            # SIGTERM while calls are up and the database is away: the drain
            # lets the calls in progress end, their records go to the spool.
            code = proxy.stop(timeout=40)
            assert code == 0, proxy.log()[-3000:]
            assert "spooled in" in proxy.log(), proxy.log()[-3000:]
            r = uac.wait(timeout=30) if uac.proc.poll() is not None else None
            uac.kill()
            stats = r.stats if r is not None else uac.live_stats()
            answered = int(stats.get("SuccessfulCall(C)", 0) or 0)
            assert 0 < answered < calls, stats
            print(f"\nSIGTERM with the database down after {answered} answered calls")
            pg.start()
            # The next start writes what the last one spooled.
            again = sipr_factory(APP, env=env)
            wait_for(
                lambda: (
                    _count(pg, "SELECT count(*) FROM cdr WHERE disposition = 'answered'")
                    >= answered
                ),
                60,
                "the spooled CDRs in PostgreSQL",
            )
            wait_for(lambda: "spooled record(s) written" in again.log(), 10, "the replay log")
        finally:
            if uac is not None:
                uac.kill()
            uas.kill()
        # Every call SIPp completed has its CDR, and no call has two.
        cdrs = _count(pg, "SELECT count(*) FROM cdr")
        assert cdrs == _count(pg, "SELECT count(DISTINCT call_id) FROM cdr")
        done = _count(pg, "SELECT count(*) FROM cdr WHERE disposition = 'answered'")
        assert done >= answered, (done, answered)
        # Calls SIPp saw completed, and those cut at exit ("shutdown"), only.
        reasons = dict(pg.query("SELECT end_reason, count(*) FROM cdr GROUP BY 1"))
        assert set(reasons) <= {"caller_bye", "shutdown", "failed"}, reasons
        assert int(reasons["caller_bye"]) >= answered, (reasons, answered)
        byes = _count(pg, "SELECT count(*) FROM acc WHERE method = 'BYE' AND code = 200")
        assert byes == int(reasons["caller_bye"]), (byes, reasons)
