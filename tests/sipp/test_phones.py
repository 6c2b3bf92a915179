"""Acceptance (issue 12, point 2): SIPp's own digest (`[authentication]`, MD5
only, answering the first challenge) registers against the pbx as shipped:
500 registrations (REGISTER, 401, REGISTER with credentials, 200), 0 failed.
The user is made with `sipr user add`; nothing is configured but the data
directory and the ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, free_port, start_sipr
from tests.sipp.peers import Sipp
from tests.sipp.regkit import render

pytestmark = pytest.mark.sipp

REGISTRATIONS = 500


def test_sipp_authentication_registers_500_times_on_the_default_pbx(
    sipp: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPR_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    added = subprocess.run(
        [sys.executable, "-m", "sipr", "user", "add", "alice", "--password", "secret"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    env["SIPR_RUN_DIR"] = str(tmp_path / "run")
    pbx = start_sipr(EXAMPLES / "pbx.py", env=env)
    try:
        scenario = render(
            "uac_register.xml", tmp_path, user="alice", password="secret", expect=200,
            expires=3600, q="1.0",
        )  # fmt: skip
        phone = Sipp(
            sipp, str(scenario), free_port(), calls=REGISTRATIONS, remote=pbx.udp, rate=100,
            timeout_s=60, extra=("-s", "alice"),
        )  # fmt: skip
        result = phone.wait()
        assert result.successful == REGISTRATIONS and result.failed == 0, result.summary()
        assert result.returncode == 0, result.summary()
    finally:
        code = pbx.stop()
    assert code == 0, pbx.log()
