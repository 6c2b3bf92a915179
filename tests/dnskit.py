"""A real DNS server for the RFC 3263 tests: Debian's dnsmasq serving a test
zone on a loopback port, and a small delaying UDP relay in front of it (a
real socket forwarder: dnsmasq itself cannot delay answers)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process


class Dnsmasq:
    """`dnsmasq` answering only from its command line (no upstream, no
    /etc/hosts); every query is logged, so tests can count them."""

    def __init__(self, records: list[str], ttl: int = 60) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
        self.log = self.dir / "queries.log"
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        args = [
            exe,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={self.port}",
            f"--local-ttl={ttl}",
            "--local=/test/",
            "--log-queries",
            f"--log-facility={self.log}",
            *records,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited: {err}")
            if query(("127.0.0.1", self.port), "ready.test", 1, timeout=0.2) is not None:
                return
        raise RuntimeError("dnsmasq did not answer")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def queries(self, name: str, qtype: str) -> int:
        """How many `qtype` queries for `name` dnsmasq received."""
        needle = f"query[{qtype}] {name} from"
        try:
            return sum(needle in line for line in self.log.read_text().splitlines())
        except OSError:
            return 0

    def stop(self) -> None:
        stop_process(self.proc)


def encode_query(name: str, qtype: int, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def query(server: tuple[str, int], name: str, qtype: int, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(encode_query(name, qtype), server)
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


def question(packet: bytes) -> tuple[str, int] | None:
    """(name, qtype) of a DNS query's first question."""
    try:
        i, labels = 12, []
        while packet[i]:
            n = packet[i]
            labels.append(packet[i + 1 : i + 1 + n].decode())
            i += 1 + n
        qtype = struct.unpack("!H", packet[i + 1 : i + 3])[0]
        return ".".join(labels).lower(), qtype
    except (IndexError, struct.error, UnicodeDecodeError):
        return None


class DelayingRelay:
    """UDP DNS relay on a loopback port: every query reaches `upstream`
    after `delay` seconds, and its answer goes back to the asker."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: Counter[tuple[str, int]] = Counter()
        #: Distinct queries (a UDP retransmission repeats the message id).
        self.ids: dict[tuple[str, int], set[int]] = {}
        self.answered = 0
        self.pending = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                packet, asker = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            q = question(packet)
            with self.lock:
                if q is not None:
                    self.seen[q] += 1
                    self.ids.setdefault(q, set()).add(struct.unpack("!H", packet[:2])[0])
                self.pending += 1
            t = threading.Thread(target=self._relay, args=(packet, asker), daemon=True)
            self.threads.append(t)
            t.start()

    def _relay(self, packet: bytes, asker: tuple[str, int]) -> None:
        try:
            if self.stopping.wait(self.delay):
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(2.0)
                up.sendto(packet, self.upstream)
                answer = up.recv(4096)
            self.sock.sendto(answer, asker)
            with self.lock:
                self.answered += 1
        except OSError:
            pass
        finally:
            with self.lock:
                self.pending -= 1

    def count(self, name: str, qtype: int) -> int:
        """Distinct queries for (name, qtype), retransmissions not counted."""
        with self.lock:
            return len(self.ids.get((name, qtype), ()))

    def stop(self) -> None:
        self.stopping.set()
        for t in [self.reader, *self.threads]:
            t.join(timeout=3)
        self.sock.close()


NAPTR, SRV, A = 35, 33, 1


@pytest.fixture
def dnsmasq_factory():  # type: ignore[no-untyped-def]
    started: list[Dnsmasq] = []

    def make(records: list[str], ttl: int = 60) -> Dnsmasq:
        d = Dnsmasq(records, ttl)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
