"""Issue 16, acceptance 5: 1,000 calls routed by prefix over three SIPp
gateways, one of which answers 503 (the calls fail over to the next)."""

from __future__ import annotations

import csv
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import ROOT, free_port, stop_process
from tests.integration.ctlkit import rpc
from tests.sipp.harness import _wait_bound, run_uac

APP = ROOT / "tests" / "apps" / "prefix_proxy.py"
SCENARIOS = ROOT / "tests" / "sipp" / "scenarios"


class Gateway:
    """A SIPp UAS counting the calls it completed (its statistics file)."""

    def __init__(self, sipp: str, scenario: list[str]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-gw-"))
        self.stat = self.dir / "stats.csv"
        self.proc = subprocess.Popen(
            [sipp, *scenario, "-i", "127.0.0.1", "-p", str(self.port), "-nostdin",
             "-trace_stat", "-stf", str(self.stat), "-fd", "1"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_bound(self.port, "u1")

    def stop(self) -> int:
        """Stops SIPp; returns the calls it completed."""
        stop_process(self.proc)
        rows = list(csv.reader(self.stat.open(), delimiter=";")) if self.stat.exists() else []
        if len(rows) < 2:
            return 0
        return int(rows[-1][rows[0].index("SuccessfulCall(C)")])


def test_thousand_calls_by_prefix_with_503_failover(sipr_factory, sipp, tmp_path):  # type: ignore[no-untyped-def]
    gw1 = Gateway(sipp, ["-sn", "uas"])
    gw2 = Gateway(sipp, ["-sf", str(SCENARIOS / "uas_503.xml")])
    gw3 = Gateway(sipp, ["-sn", "uas"])
    counts: dict[str, int] = {}
    try:
        db = tmp_path / "routes.db"
        from sipr.prefix_routing import connect

        with connect(str(db)) as c:
            c.executemany(
                "INSERT INTO pr_gateways (id, uri) VALUES (?, ?)",
                [(name, f"sip:127.0.0.1:{gw.port}") for name, gw in
                 (("gw1", gw1), ("gw2", gw2), ("gw3", gw3))],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO pr_rules (prefix, caller_prefix, gateway, priority) VALUES (?,?,?,?)",
                [
                    ("1", "", "gw1", 0),
                    ("44", "", "gw2", 0),  # out of service: 503
                    ("44", "", "gw3", 1),
                    ("4", "", "gw1", 0),  # shorter prefix: never wins over 44
                    ("33", "", "gw3", 0),
                ],
            )
        proxy = sipr_factory(APP, env={"SIPR_ROUTES": str(db)})
        plan = (("1555", 400), ("44555", 400), ("33555", 200))
        for number, calls in plan:
            r = run_uac(
                sipp, proxy.udp, calls=calls, rate=200, port=free_port(), extra=("-s", number)
            )
            assert r.successful == calls and r.failed == 0, (number, r.output[-2000:])
        dump = rpc(proxy.ctl, "lcr.dump")
        assert len(dump) == 5
    finally:
        counts = {"gw1": gw1.stop(), "gw2": gw2.stop(), "gw3": gw3.stop()}
    # gw2 answered 503 to every 44 call; each then completed on gw3.
    assert counts == {"gw1": 400, "gw2": 400, "gw3": 600}, counts
