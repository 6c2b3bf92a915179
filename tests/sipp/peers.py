"""Helpers for the stateful acceptance tests: SIPp processes running custom
scenarios (UAC or UAS, both ending by themselves after `-m` calls and leaving
their final statistics), the proxy's counters, and CPU time from /proc."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import header, options_counters
from tests.sipp.harness import _wait_bound

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@dataclass
class SippStats:
    returncode: int
    stats: dict[str, str]
    output: str
    logs: str

    def count(self, name: str) -> int:
        return int(self.stats.get(name, "0") or 0)

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.count("TotalCallCreated")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions(C)")

    def summary(self) -> str:
        return (
            f"rc={self.returncode} created={self.created} ok={self.successful} "
            f"failed={self.failed} retrans={self.retransmissions}\n"
            f"{self.output[-2000:]}\n{self.logs[-2000:]}"
        )


class Sipp:
    """One SIPp process running `scenario` (a file in tests/sipp/scenarios).

    A UAS (no `remote`) is waited for until its port is bound; every process
    is given `-m calls` so it exits by itself once the calls are done, and a
    global `-timeout` so a stuck call fails the run instead of hanging it.
    """

    def __init__(
        self,
        sipp: str,
        scenario: str,
        port: int,
        *,
        calls: int,
        remote: tuple[str, int] | None = None,
        rate: int = 10,
        transport: str = "u1",
        timeout_s: int = 60,
        recv_timeout_s: int = 15,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"sipp-{Path(scenario).stem}-"))
        self.stat = self.workdir / "stats.csv"
        self.log = self.workdir / "logs.txt"
        self.err = self.workdir / "errors.txt"
        self.timeout_s = timeout_s
        args = [sipp, "-sf", str(SCENARIOS / scenario)]
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
            args += ["-r", str(rate), "-l", str(max(rate * 4, 100))]
        args += [
            "-i", "127.0.0.1", "-p", str(port), "-t", transport,
            "-m", str(calls),
            "-nostdin",
            "-timeout", f"{timeout_s}s", "-timeout_error",
            "-recv_timeout", str(recv_timeout_s * 1000),
            "-trace_stat", "-stf", str(self.stat), "-fd", "1",
            "-trace_err", "-error_file", str(self.err),
            "-trace_logs", "-log_file", str(self.log),
            "-buff_size", "4194304",
            *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.port = port
        if remote is None:
            try:
                _wait_bound(port, transport)
            except Exception:
                self.kill()
                raise

    def wait(self, timeout: float | None = None) -> SippStats:
        """Waits for SIPp to exit (bounded) and reads its final statistics."""
        try:
            out, _ = self.proc.communicate(timeout=timeout or self.timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
            out = f"(killed: did not finish)\n{out}"
        return SippStats(self.proc.returncode, self._stats(), out or "", self._logs())

    def live_stats(self) -> dict[str, str]:
        """The latest periodic statistics row (written every second) of a running SIPp."""
        return self._stats()

    def _stats(self) -> dict[str, str]:
        if not self.stat.exists():
            return {}
        rows = list(csv.reader(self.stat.open(), delimiter=";"))
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1], strict=False))

    def _logs(self) -> str:
        text = ""
        for f in (self.log, self.err):
            if f.exists():
                text += f.read_text(errors="replace")
        return text

    def logs(self) -> str:
        return self._logs()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def sipr_stats(addr: tuple[str, int]) -> dict[str, int]:
    """The proxy's counters (`OPTIONS sip:stats@proxy` of tests/apps/stateful_proxy.py)."""
    return options_counters(addr, "stats", "x-stat-")


def wait_drained(addr: tuple[str, int], timeout: float) -> dict[str, int]:
    """Polls (over TCP, see `sipr_stats`) until no transaction, proxy context or
    timer is left but the one of the stats request being answered."""
    deadline = time.monotonic() + timeout
    while True:
        s = sipr_stats(addr)
        if (
            s["transactions.server"] <= 1
            and s["transactions.client"] == 0
            and s["transactions.contexts"] == 0
            and s["timers"] == 0
        ):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"transactions did not drain in {timeout}s: {s}")
        # The previous query's Timer J (0 over TCP) fires at the next whole
        # second (coarse timers): poll slower than that.
        time.sleep(1.1)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` in ns (schedstat: exact, not ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def cpu_ticks_ms(pid: int) -> float:
    """utime+stime of `pid` from /proc/PID/stat, in ms (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def count_in(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


__all__ = ["SCENARIOS", "Sipp", "SippStats", "cpu_ns", "cpu_ticks_ms", "header", "sipr_stats"]
