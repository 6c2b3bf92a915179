"""Acceptance (issue 3, point 6): sipr and Kamailio (Debian package) as
neighbour proxies, both transaction-stateful and record-routing:

    SIPp UAC -> sipr -> Kamailio -> SIPp UAS
    SIPp UAC -> Kamailio -> sipr -> SIPp UAS

Calls complete (INVITE/ACK/BYE), and the in-dialog ACK and BYE follow the
Route set through both proxies (the UAS sees both proxies' Vias on them)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.sipp.peers import sipr_stats
from tests.sipp.runner import Sipp, wait_bound

CFG = Path(__file__).resolve().parent / "kamailio" / "proxy.cfg"
PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
CALLS = 50


class Kamailio:
    """tests/sipp/kamailio/proxy.cfg in the foreground on 127.0.0.1:`port` (UDP)."""

    def __init__(self, port: int, next_hop: str) -> None:
        exe = shutil.which("kamailio")
        if exe is None:
            pytest.fail("kamailio is not installed: apt-get install -y kamailio")
        self.workdir = Path(tempfile.mkdtemp(prefix="kamailio-"))
        self.log = self.workdir / "kamailio.log"
        common = [
            "-f", str(CFG),
            "-l", f"udp:127.0.0.1:{port}",
            "-A", f'NEXT_HOP="{next_hop}"',
        ]  # fmt: skip
        check = subprocess.run(
            [exe, "-c", *common], capture_output=True, text=True, cwd=self.workdir, timeout=30
        )
        assert check.returncode == 0, f"kamailio -c failed:\n{check.stdout}{check.stderr}"
        args = [
            exe, "-DD", "-E", *common,
            "-w", str(self.workdir), "-Y", str(self.workdir),
            "-P", str(self.workdir / "kamailio.pid"),
            "-m", "64", "-M", "8",
        ]  # fmt: skip
        self.logf = self.log.open("w")
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=self.logf, stderr=subprocess.STDOUT
        )
        try:
            wait_bound(port, "u1")
        except Exception:
            self.stop()
            raise
        self.port = port

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def _in_dialog_vias(workdir: Path) -> dict[str, list[list[str]]]:
    """For each ACK/BYE the UAS received: the sent-by of its Vias, top first."""
    out: dict[str, list[list[str]]] = {"ACK": [], "BYE": []}
    for log in workdir.glob("*_messages.log"):
        for block in re.split(r"-{47} (?=\d{4}-)", log.read_text(errors="replace")):
            if "message received" not in block:
                continue
            msg = block.split(":\n\n", 1)[-1].lstrip()
            method = msg.split(" ", 1)[0]
            if method in out:
                vias = re.findall(r"^Via: SIP/2\.0/\w+ ([^;\s]+)", msg, re.M)
                out[method].append(vias)
    return out


def _run_calls(sipp: str, first_hop: tuple[str, int], uac_port: int, uas: Sipp) -> None:
    uac = Sipp(sipp, "uac_rr.xml", uac_port, calls=CALLS, remote=first_hop, rate=25, timeout_s=30)
    r = uac.wait()
    assert (r.successful, r.failed, r.returncode) == (CALLS, 0, 0), r.summary()
    u = uas.wait()
    assert (u.successful, u.failed, u.returncode) == (CALLS, 0, 0), u.summary()


def test_uac_sipr_kamailio_uas(sipp: str, sipr_factory) -> None:
    uas_port, uac_port, kam_port = free_port(), free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=CALLS, timeout_s=30, extra=("-trace_msg",))
    kam = None
    try:
        kam = Kamailio(kam_port, f"sip:127.0.0.1:{uas_port}")
        proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{kam_port}"})
        _run_calls(sipp, proxy.udp, uac_port, uas)
        # ACK and BYE went UAC -> sipr -> Kamailio -> UAS by the Route set.
        vias = _in_dialog_vias(uas.workdir)
        want = [f"127.0.0.1:{kam_port}", f"127.0.0.1:{proxy.udp[1]}", f"127.0.0.1:{uac_port}"]
        assert len(vias["BYE"]) >= CALLS and all(v == want for v in vias["BYE"]), vias["BYE"][:3]
        assert len(vias["ACK"]) >= CALLS and all(v == want for v in vias["ACK"]), vias["ACK"][:3]
        s = sipr_stats(proxy.tcp)
        app_seen = {k: v for k, v in s.items() if k.startswith("app.")}
        assert app_seen == {"app.invite": CALLS}, app_seen  # ACK/BYE loose-routed in Rust
        assert kam.alive(), kam.output()
        assert proxy.alive()
    finally:
        uas.kill()
        if kam is not None:
            kam.stop()


def test_uac_kamailio_sipr_uas(sipp: str, sipr_factory) -> None:
    uas_port, uac_port, kam_port = free_port(), free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=CALLS, timeout_s=30, extra=("-trace_msg",))
    kam = None
    try:
        proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{uas_port}"})
        kam = Kamailio(kam_port, f"sip:127.0.0.1:{proxy.udp[1]}")
        _run_calls(sipp, ("127.0.0.1", kam_port), uac_port, uas)
        vias = _in_dialog_vias(uas.workdir)
        want = [f"127.0.0.1:{proxy.udp[1]}", f"127.0.0.1:{kam_port}", f"127.0.0.1:{uac_port}"]
        assert len(vias["BYE"]) >= CALLS and all(v == want for v in vias["BYE"]), vias["BYE"][:3]
        assert len(vias["ACK"]) >= CALLS and all(v == want for v in vias["ACK"]), vias["ACK"][:3]
        s = sipr_stats(proxy.tcp)
        app_seen = {k: v for k, v in s.items() if k.startswith("app.")}
        assert app_seen == {"app.invite": CALLS}, app_seen
        assert kam.alive(), kam.output()
        assert proxy.alive()
    finally:
        uas.kill()
        if kam is not None:
            kam.stop()
