"""Shared fixtures: start `sipr run` in a subprocess on 127.0.0.1 ephemeral
ports, talk to it over real sockets, stop it and check it exited cleanly."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "rust" / "tests" / "fixtures"

# The startup line, plain or as the "msg" of a JSON log line (--log-format json).
LISTEN_RE = re.compile(r'sipr: listening on (\w+):\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?:"\})?$')
CTL_RE = re.compile(r'sipr: control socket (/.+?)(?:"\})?$')
HTTP_RE = re.compile(r'sipr: control http on \[?([0-9a-fA-F.:]+?)\]?:(\d+)(?:"\})?$')


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int:  # type: ignore[type-arg]
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Sipr:
    proc: subprocess.Popen[str]
    addrs: dict[str, tuple[str, int]]
    output: list[str] = field(default_factory=list)
    #: The control socket (each instance gets its own run directory).
    ctl: Path | None = None
    #: (host, port) of the `--http` control listener, when started with one.
    http: tuple[str, int] | None = None

    @property
    def udp(self) -> tuple[str, int]:
        return self.addrs["udp"]

    @property
    def tcp(self) -> tuple[str, int]:
        return self.addrs["tcp"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(self.output)

    def stop(self, timeout: float = 10.0) -> int:
        return stop_process(self.proc, timeout)


def start_sipr(
    app: str | Path,
    listen: tuple[str, ...] = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0"),
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 15.0,
) -> Sipr:
    """Run `sipr run APP` and wait until every listener is reported."""
    args = [sys.executable, "-m", "sipr", "run", str(app), *extra_args]
    for spec in listen:
        args += ["--listen", spec]
    env = {**os.environ, **(env or {})}
    # A run directory per instance: instances started side by side must not
    # contend for one default control socket.
    env.setdefault("SIPR_RUN_DIR", tempfile.mkdtemp(prefix="sipr-run-"))
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stderr is not None
    sipr = Sipr(proc, {})
    deadline = time.monotonic() + timeout
    while len(sipr.addrs) < len(listen):
        line = proc.stderr.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"sipr exited early ({proc.returncode}):\n{sipr.log()}")
        line = line.rstrip("\n")
        sipr.output.append(line)
        m = LISTEN_RE.search(line)
        if m:
            sipr.addrs[m.group(1)] = (m.group(2), int(m.group(3)))
        m = CTL_RE.search(line)
        if m:
            sipr.ctl = Path(m.group(1))
        m = HTTP_RE.search(line)
        if m:
            sipr.http = (m.group(1), int(m.group(2)))
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sipr did not start in {timeout}s:\n{sipr.log()}")

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            sipr.output.append(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    return sipr


@pytest.fixture
def sipr_factory() -> Iterator:
    started: list[Sipr] = []

    def factory(*args, **kwargs) -> Sipr:
        s = start_sipr(*args, **kwargs)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def responder() -> Iterator[Sipr]:
    s = start_sipr(EXAMPLES / "responder.py")
    yield s
    code = s.stop()
    assert code == 0, f"sipr exited with {code}:\n{s.log()}"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP right now on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


class UdpPeer:
    """A UDP socket that sends SIP and reads responses with a timeout."""

    def __init__(
        self, family: int = socket.AF_INET, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(3.0)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def recv(self, timeout: float = 3.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def udp_peer() -> Iterator[UdpPeer]:
    p = UdpPeer()
    yield p
    p.close()


def sip_request(
    method: str = "OPTIONS",
    uri: str = "sip:sipr@127.0.0.1",
    *,
    via: str = "SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport",
    port: int = 5061,
    branch: str | None = None,
    call_id: str | None = None,
    extra: str = "",
    body: bytes = b"",
    max_forwards: int | None = 70,
) -> bytes:
    branch = branch or os.urandom(6).hex()
    call_id = call_id or os.urandom(8).hex()
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via.format(port=port, branch=branch)}\r\n"
        f"{mf}"
        f"From: <sip:alice@127.0.0.1>;tag=a{branch}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sip_answer(req: bytes, status: int, reason: str, to_tag: str, extra: str = "") -> bytes:
    """A response to `req` (every Via, From, To with `to_tag`, Call-ID, CSeq),
    with `extra` header lines ("Name: value\\r\\n" each) added."""
    head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    out = [f"SIP/2.0 {status} {reason}"]
    for line in head:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            out.append(line)
        elif name in ("to", "t"):
            out.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    return ("\r\n".join(out) + f"\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def non2xx_ack(invite: bytes, resp: bytes) -> bytes:
    """The non-2xx ACK (RFC 3261 17.1.1.3) for `invite` and its final `resp`."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    keep = [ln for ln in lines[1:] if ln.split(":", 1)[0] in ("Via", "From", "Call-ID")]
    to = header(resp, "To")
    ruri = lines[0].split(" ")[1]
    return (
        f"ACK {ruri} SIP/2.0\r\n" + "\r\n".join(keep) + f"\r\nTo: {to}\r\nCSeq: 1 ACK\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def status_of(resp: bytes | None) -> int | None:
    if not resp:
        return None
    first = resp.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1]) if len(first) > 1 and first[0] == b"SIP/2.0" else None


def header(resp: bytes, name: str) -> str | None:
    for line in resp.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


@pytest.fixture(scope="session")
def sipp() -> str:
    """Path to SIPp; a missing SIPp fails the test (CI installs sip-tester)."""
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: apt-get install -y sip-tester")
    return path


def options_over_tcp(
    addr: tuple[str, int], user: str, extra: str = "", timeout: float = 10.0
) -> bytes:
    """Sends `OPTIONS sip:USER@addr` over TCP (its transaction ends at once,
    unlike UDP's Timer J) and returns the response head and what came with it
    (b"" if the connection closed first)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        port = s.getsockname()[1]
        s.sendall(
            sip_request(
                "OPTIONS",
                f"sip:{user}@{addr[0]}:{addr[1]}",
                via="SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}",
                port=port,
                extra=extra,
            )
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65535)
            if not chunk:
                break
            data += chunk
    return data


def options_counters(addr: tuple[str, int], user: str, prefix: str = "x-") -> dict[str, int]:
    """`options_over_tcp` to USER; returns the 200's headers starting with
    `prefix` as integers, keyed by the lower-cased rest of their name."""
    data = options_over_tcp(addr, user)
    assert status_of(data) == 200, data
    out: dict[str, int] = {}
    for line in data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower().startswith(prefix):
            try:
                out[name[len(prefix) :].lower()] = int(value.strip())
            except ValueError:
                continue
    return out
