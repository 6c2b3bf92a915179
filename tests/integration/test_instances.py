"""Acceptance (issue 12, point 7): several `sipr run` under one account.

With default options (no --ctl, no --no-ctl, one run directory), two
instances on different ports both start and serve, each with a control socket
named after its first listener. `sipr ctl` with both running names them and
asks for `--ctl`; `--ctl` picks one; with one left, `sipr ctl` talks to it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from tests.conftest import free_port, sip_request, start_sipr, status_of
from tests.integration.ctlkit import OPS_APP, sipr_ctl


def answers(addr: tuple[str, int]) -> bool:
    """An OPTIONS for nobody registered is answered 404 by the ops app."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(sip_request(port=s.getsockname()[1]), addr)
        return status_of(s.recv(65535)) == 404


def test_two_instances_with_default_options_share_a_run_directory(
    tmp_path: Path, monkeypatch
) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv("SIPR_RUN_DIR", str(run_dir))  # for `sipr ctl` below
    ports = [free_port(), free_port()]
    instances = []
    try:
        for port in ports:
            listen = (f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}")
            instances.append(start_sipr(OPS_APP, listen=listen, env=dict(os.environ)))
        a, b = instances
        assert a.ctl == run_dir / f"sipr-udp-127.0.0.1-{ports[0]}.ctl"
        assert b.ctl == run_dir / f"sipr-udp-127.0.0.1-{ports[1]}.ctl"
        assert answers(a.udp) and answers(b.udp)  # both serve

        both = sipr_ctl("stats.get")
        assert both.returncode == 1 and both.stdout == ""
        assert both.stderr.strip().splitlines() == [
            "sipr: error: 2 sipr instances are running; choose one with --ctl: "
            + ", ".join(sorted(str(s.ctl) for s in instances))
        ]
        for s in (a, b):
            picked = sipr_ctl("--ctl", str(s.ctl), "--json", "core.ps")
            assert picked.returncode == 0, picked.stderr
            assert {p["pid"] for p in json.loads(picked.stdout)} == {s.proc.pid}

        assert b.stop() == 0, b.log()
        assert not b.ctl.exists()
        only = sipr_ctl("--json", "core.ps")
        assert only.returncode == 0, only.stderr
        assert {p["pid"] for p in json.loads(only.stdout)} == {a.proc.pid}
        assert a.stop() == 0, a.log()
        none = sipr_ctl("stats.get")
        assert none.returncode == 1
        assert none.stderr.strip() == (
            f"sipr: error: no sipr control socket in {run_dir}: is sipr running? (or --ctl PATH)"
        )
    finally:
        for s in instances:
            s.stop()
