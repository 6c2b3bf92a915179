"""`sipr run --workers N` (issue 20): one port served by N processes under a
supervisor; what the supervisor's control socket shows; restarts, reload and
drain. The load acceptance (SIPp) is tests/sipp/test_workers.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, UdpPeer, header, sip_request, status_of
from tests.integration.ctlkit import http_request, rpc, sipr_ctl

APP = ROOT / "tests" / "apps" / "workers_app.py"
#: Distinct UDP sources: with 2 workers, each is all but certain to be hashed
#: to both (odds of one worker getting none: 2 * 2^-32).
SOURCES = 32


def whoami(peers: list[UdpPeer], to: tuple[str, int]) -> list[bytes]:
    """One `OPTIONS sip:whoami@` from each peer; their answers in order."""
    uri = f"sip:whoami@{to[0]}:{to[1]}"
    out = []
    for p in peers:
        p.send(sip_request("OPTIONS", uri, port=p.port), to)
    for p in peers:
        resp = p.recv(5.0)
        assert status_of(resp) == 200, resp
        assert resp is not None
        out.append(resp)
    return out


def pids_of(answers: list[bytes]) -> list[int]:
    return [int(header(a, "X-Worker-Pid") or 0) for a in answers]


def wait_serving(ctl: Path, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = rpc(ctl, "workers")
        if len(rows) == count and all(r["state"] == "serving" for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.02)


def test_bad_workers_flag_is_one_line() -> None:
    for value, words in (("0", "1 to 256"), ("many", "number or 'auto'")):
        r = subprocess.run(
            [sys.executable, "-m", "sipr", "run", str(APP), "--workers", value],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1, r
        assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


def test_two_workers_share_udp_and_tcp_and_one_control_socket(sipr_factory) -> None:
    s = sipr_factory(APP, extra_args=("--workers", "2", "--http", "127.0.0.1:0"))
    rows = wait_serving(s.ctl, 2)
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    peers = [UdpPeer() for _ in range(SOURCES)]
    try:
        first = pids_of(whoami(peers, s.udp))
        # Every worker serves the one port; a source keeps its worker (the
        # kernel hashes the 4-tuple), so its retransmissions and CANCELs
        # find the transaction.
        assert set(first) == pids, first
        assert pids_of(whoami(peers, s.udp)) == first
    finally:
        for p in peers:
            p.close()
    # Summed statistics: every OPTIONS counted once, whichever worker took it.
    total = rpc(s.ctl, "stats.get", "requests_in.")
    assert total["requests_in.OPTIONS"] == 2 * SOURCES, total
    per_worker = {r["pid"]: r["requests"] for r in rpc(s.ctl, "workers")}
    assert sum(per_worker.values()) == 2 * SOURCES and all(per_worker.values()), per_worker
    by_worker = {r["stat"]: r for r in rpc(s.ctl, "workers.stats", "requests_in.")}
    row = by_worker["requests_in.OPTIONS"]
    assert row["w0"] + row["w1"] == row["all"] == 2 * SOURCES, row
    assert "workers.stats" in rpc(s.ctl, "system.listMethods")
    # People's table and --json.
    out = sipr_ctl("--ctl", str(s.ctl), "workers")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].split()[:3] == ["WORKER", "PID", "STATE"], out.stdout
    rows = json.loads(sipr_ctl("--ctl", str(s.ctl), "--json", "workers").stdout)
    assert {r["pid"] for r in rows} == pids
    # /metrics: each worker's samples, labelled.
    assert s.http is not None
    status, _, body = http_request(s.http, "GET", "/metrics")
    text = body.decode()
    assert status == 200, text
    for w in (0, 1):
        sample = re.search(
            rf'^sipr_requests_received_total{{(?=[^}}]*method="OPTIONS")(?=[^}}]*worker="{w}")',
            text,
            re.M,
        )
        assert sample, text
    assert text.count("# TYPE sipr_requests_received_total counter") == 1
    assert s.stop() == 0, s.log()


def test_killed_worker_is_restarted_within_a_second(sipr_factory) -> None:
    s = sipr_factory(APP, extra_args=("--workers", "2"))
    rows = wait_serving(s.ctl, 2)
    victim, other = rows[0]["pid"], rows[1]["pid"]
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    deadline = killed + 10
    while True:
        rows = rpc(s.ctl, "workers")
        if rows[0]["pid"] not in (None, victim) and rows[0]["state"] == "serving":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.01)
    took = time.monotonic() - killed
    print(f"\nworker restarted and serving {took * 1000:.0f} ms after kill -9")
    assert took < 1.0, f"restart took {took:.2f} s"
    assert rows[1]["pid"] == other and rows[0]["restarts"] == 1, rows
    # The port is still served by both: the new worker took the old one's socket.
    peers = [UdpPeer() for _ in range(SOURCES)]
    try:
        assert set(pids_of(whoami(peers, s.udp))) == {rows[0]["pid"], other}
    finally:
        for p in peers:
            p.close()
    assert s.stop() == 0, s.log()


def test_sighup_reloads_every_worker_and_sigterm_drains_all(sipr_factory, tmp_path) -> None:
    version = tmp_path / "version"
    version.write_text("1")
    s = sipr_factory(APP, env={"SIPR_VERSION_FILE": str(version)}, extra_args=("--workers", "2"))
    wait_serving(s.ctl, 2)
    peers = [UdpPeer() for _ in range(SOURCES)]
    try:
        before = whoami(peers, s.udp)
        assert {header(a, "X-App-Version") for a in before} == {"1"}
        version.write_text("2")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            after = whoami(peers, s.udp)
            if {header(a, "X-App-Version") for a in after} == {"2"}:
                break
            assert time.monotonic() < deadline, [header(a, "X-App-Version") for a in after]
            time.sleep(0.1)
        # The same two processes, reloaded (not restarted).
        assert set(pids_of(after)) == set(pids_of(before))
    finally:
        for p in peers:
            p.close()
    pids = [r["pid"] for r in rpc(s.ctl, "workers")]
    assert s.stop() == 0, s.log()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    assert not s.ctl.exists()
