"""Run SIPp as a real peer: a UAS in the background, a UAC to completion, and
read the call counts from SIPp's statistics file."""

from __future__ import annotations

import csv
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import stop_process


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    retransmissions: int
    output: str


class SippUas:
    def __init__(self, sipp: str, port: int, transport: str = "u1", extra: tuple[str, ...] = ()):
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-uas-"))
        self.proc = subprocess.Popen(
            [
                sipp,
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                transport,
                "-nostdin",
                "-trace_err",
                *extra,
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.port = port
        _wait_bound(port, transport)

    def stop(self) -> None:
        stop_process(self.proc)


def _wait_bound(port: int, transport: str, timeout: float = 10.0) -> None:
    """Wait until SIPp has bound its port (it refuses traffic before that)."""
    flag = "-tln" if transport.startswith("t") else "-uln"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", flag, f"sport = :{port}"], capture_output=True, text=True)
        if f":{port}" in out.stdout:
            return
        time.sleep(0.05)
    raise RuntimeError(f"SIPp did not bind port {port}")


def run_uac(
    sipp: str,
    target: tuple[str, int],
    *,
    calls: int,
    rate: int,
    port: int,
    transport: str = "u1",
    timeout_s: int = 120,
    extra: tuple[str, ...] = (),
) -> SippResult:
    workdir = Path(tempfile.mkdtemp(prefix="sipp-uac-"))
    stat = workdir / "stats.csv"
    args = [
        sipp,
        "-sn",
        "uac",
        f"{target[0]}:{target[1]}",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        transport,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(max(rate * 4, 100)),
        "-nostdin",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-recv_timeout",
        "10000",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "1",
        "-trace_err",
        *extra,
    ]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout_s + 30)
    successful = failed = retrans = 0
    if stat.exists():
        rows = list(csv.reader(stat.open(), delimiter=";"))
        if len(rows) >= 2:
            head, last = rows[0], rows[-1]
            col = {name: i for i, name in enumerate(head)}
            successful = int(last[col["SuccessfulCall(C)"]])
            failed = int(last[col["FailedCall(C)"]])
            retrans = int(last[col["Retransmissions(C)"]])
    return SippResult(proc.returncode, successful, failed, retrans, proc.stdout + proc.stderr)
