"""The one SIPp runner of the test suite: a SIPp process running a scenario
file or a built-in one (`-sn uac|uas`), ending by itself after `-m calls`,
bounded by a global `-timeout`, and its final statistics, errors and (with
`trace_messages`) the messages it exchanged.

Behaviour tests use `sipr.testing` (docs/testing.md); SIPp is for load,
timing and interop."""

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

SIPP_DIR = Path(__file__).resolve().parent
SCENARIOS = SIPP_DIR / "scenarios"

#: SIPp processes not yet waited for; `reap()` kills those a failed test left.
RUNNING: list[Sipp] = []


@dataclass
class SippStats:
    returncode: int
    stats: dict[str, str]
    output: str
    #: SIPp's -trace_logs / -trace_err text.
    logs: str = ""
    #: SIPp's -trace_msg text (`trace_messages=True`).
    messages: str = ""

    def count(self, name: str) -> int:
        return int(self.stats.get(name, "0") or 0)

    successful = property(lambda self: self.count("SuccessfulCall(C)"))
    failed = property(lambda self: self.count("FailedCall(C)"))
    created = property(lambda self: self.count("TotalCallCreated"))
    retransmissions = property(lambda self: self.count("Retransmissions(C)"))

    def summary(self) -> str:
        text = (
            f"rc={self.returncode} created={self.created} ok={self.successful} "
            f"failed={self.failed} retrans={self.retransmissions}\n"
            f"{self.output[-3000:]}\n{self.logs[-2000:]}"
        )
        return text + (f"\n--- messages ---\n{self.messages[-4000:]}" if self.messages else "")

    def received(self, pattern: str) -> list[tuple[str, str]]:
        """(timestamp, first line) of each message SIPp received matching `pattern`."""
        out = []
        for block in self.messages.split("-" * 47):
            if "message received" not in block:
                continue
            stamp = block.strip().split("\n", 1)[0]
            first = block.split(":\n\n", 1)[-1].lstrip().split("\n", 1)[0]
            if re.search(pattern, first):
                out.append((stamp, first))
        return out

    def sent_messages(self) -> list[str]:
        return [
            block.split(":\n\n", 1)[-1].strip("\n")
            for block in self.messages.split("-" * 47)
            if "message sent" in block
        ]


#: What the older runners called their results.
SippResult = SippStats


class Sipp:
    """One SIPp process. `scenario`: a file name in tests/sipp/scenarios, a
    path, or None for the built-in `builtin` ("uac", "uas"). A UAS (no
    `remote`) is waited for until its port is bound."""

    def __init__(
        self,
        sipp: str,
        scenario: str | Path | None = None,
        port: int = 0,
        *,
        builtin: str | None = None,
        calls: int | None = 1,
        remote: tuple[str, int] | None = None,
        rate: int = 10,
        transport: str = "u1",
        service: str | None = None,
        timeout_s: int | None = 60,
        recv_timeout_s: int = 15,
        trace_messages: bool = False,
        extra: tuple[str, ...] = (),
        workdir: Path | None = None,
    ) -> None:
        stem = Path(scenario).stem if scenario else (builtin or "uac")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"sipp-{stem}-", dir=workdir))
        self.stat = self.workdir / "stats.csv"
        self.log = self.workdir / "logs.txt"
        self.err = self.workdir / "errors.txt"
        self.msgs = self.workdir / "messages.log"
        self.timeout_s = timeout_s
        args = [sipp]
        if scenario is None:
            args += ["-sn", builtin or "uac"]
        else:
            path = Path(scenario)
            args += ["-sf", str(path if path.is_absolute() else SCENARIOS / path)]
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
            args += ["-r", str(rate), "-l", str(max(rate * 4, 100))]
        if service is not None:
            args += ["-s", service]
        if calls is not None:  # None: until stopped
            args += ["-m", str(calls)]
        if timeout_s is not None:
            args += ["-timeout", f"{timeout_s}s", "-timeout_error"]
        args += [
            "-i", "127.0.0.1", "-p", str(port), "-t", transport,
            "-nostdin",
            "-recv_timeout", str(recv_timeout_s * 1000),
            "-trace_stat", "-stf", str(self.stat), "-fd", "1",
            "-trace_err", "-error_file", str(self.err),
            "-trace_logs", "-log_file", str(self.log),
            "-buff_size", "4194304",
        ]  # fmt: skip
        if trace_messages:
            args += ["-trace_msg", "-message_file", str(self.msgs)]
        args += list(extra)
        # A file, not a pipe: a SIPp serving a long test must never block
        # on a full pipe nobody reads yet.
        self.stdout = self.workdir / "stdout.txt"
        with self.stdout.open("w") as out:
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        self.port = port
        RUNNING.append(self)
        if remote is None:
            try:
                wait_bound(port, transport)
            except Exception:
                self.kill()
                raise

    def wait(self, timeout: float | None = None) -> SippStats:
        """Waits for SIPp to exit (bounded) and reads its final statistics."""
        killed = ""
        try:
            self.proc.wait(timeout=timeout or (self.timeout_s or 60) + 15)
        except subprocess.TimeoutExpired:
            self.kill()
            killed = "(killed: did not finish)\n"
        out = killed + self.stdout.read_text(errors="replace")
        if self in RUNNING:
            RUNNING.remove(self)
        msgs = self.msgs.read_text(errors="replace") if self.msgs.exists() else ""
        return SippStats(self.proc.returncode, self._stats(), out, self._logs(), msgs)

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
        return "".join(f.read_text(errors="replace") for f in (self.log, self.err) if f.exists())

    def logs(self) -> str:
        return self._logs()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)

    def stop(self) -> None:
        """SIGTERM (a UAS serving until the test ends), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in RUNNING:
            RUNNING.remove(self)


def reap() -> None:
    """Kills the SIPp processes a failed test left running."""
    while RUNNING:
        RUNNING.pop().kill()


def wait_bound(port: int, transport: str, timeout: float = 10.0) -> None:
    """Wait until SIPp has bound its port (it refuses traffic before that)."""
    flag = "-tln" if transport.startswith("t") else "-uln"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", flag, f"sport = :{port}"], capture_output=True, text=True)
        if f":{port}" in out.stdout:
            return
        time.sleep(0.05)
    raise RuntimeError(f"SIPp did not bind port {port}")


def start_uas(sipp: str, port: int, transport: str = "u1", extra: tuple[str, ...] = ()) -> Sipp:
    """SIPp's built-in UAS, answering every call until stopped."""
    return Sipp(
        sipp, builtin="uas", port=port, transport=transport, calls=None, timeout_s=None, extra=extra
    )


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
) -> SippStats:
    """SIPp's built-in UAC: `calls` calls at `rate`, to completion."""
    uac = Sipp(
        sipp,
        None,
        port,
        builtin="uac",
        remote=target,
        calls=calls,
        rate=rate,
        transport=transport,
        timeout_s=timeout_s,
        recv_timeout_s=10,
        extra=extra,
    )
    return uac.wait()


def render(template: Path, dest_dir: Path, **subst: object) -> Path:
    """The scenario TEMPLATE with @KEY@ replaced, written to dest_dir."""
    text = template.read_text()
    for k, v in subst.items():
        text = text.replace(f"@{k.upper()}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"unrendered {left} in {template.name}"
    out = dest_dir / f"{template.stem}-{os.urandom(3).hex()}.xml"
    out.write_text(text)
    return out
