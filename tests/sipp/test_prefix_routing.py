"""Issue 16, acceptance 5: 1,000 calls routed by prefix over three SIPp
gateways, one of which answers 503 (the calls fail over to the next)."""

from __future__ import annotations

import csv
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import ROOT, free_port, stop_process
from tests.integration.ctlkit import rpc
from tests.sipp.runner import run_uac, wait_bound

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
        wait_bound(self.port, "u1")

    def completed(self) -> int:
        """Calls completed so far, from the statistics SIPp writes every second."""
        try:
            rows = list(csv.reader(self.stat.open(), delimiter=";"))
        except OSError:
            return 0
        if len(rows) < 2:
            return 0
        return int(rows[-1][rows[0].index("SuccessfulCall(C)")])

    def stop(self) -> None:
        stop_process(self.proc)


def wait_counts(gws: dict[str, Gateway], want: dict[str, int], timeout: float = 20) -> dict:  # type: ignore[type-arg]
    """The gateways' completed calls once they reach `want` (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {name: gw.completed() for name, gw in gws.items()}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)  # SIPp rewrites its statistics file once a second


def test_thousand_calls_by_prefix_with_503_failover(sipr_factory, sipp, tmp_path):  # type: ignore[no-untyped-def]
    gw1 = Gateway(sipp, ["-sn", "uas"])
    gw2 = Gateway(sipp, ["-sf", str(SCENARIOS / "uas_503.xml")])
    gw3 = Gateway(sipp, ["-sn", "uas"])
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
        # gw2 answered 503 to every 44 call; each then completed on gw3.
        want = {"gw1": 400, "gw2": 400, "gw3": 600}
        counts = wait_counts({"gw1": gw1, "gw2": gw2, "gw3": gw3}, want)
        assert counts == want, counts
    finally:
        for gw in (gw1, gw2, gw3):
            gw.stop()
