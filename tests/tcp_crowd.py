"""Tens of thousands of TCP clients at once, for the connection-scale test and
the memory bench.

One process may hold only as many sockets as its open-files limit allows, and
one source address has one ephemeral port range, so the clients are spread
over worker processes, each connecting from its own loopback address
(127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8 is loopback). The parent drives
the workers step by step over pipes: connect, send one OPTIONS per connection
and read its answer, hold the connections idle, close.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from tests.conftest import sip_request, status_of

# Connections being opened at once per worker: the proxy's accept backlog
# (and the kernel's SYN backlog, 2048 by default) must not overflow, or
# connects wait for a SYN retransmission (1 s and more).
CONNECTS_IN_FLIGHT = 200
# OPTIONS outstanding per worker: well under the proxy's ingress queue and
# pending-request bound, so no request is refused for overload.
OPTIONS_IN_FLIGHT = 250


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one; returns the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class StepResult:
    ok: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: StepResult) -> None:
        self.ok += other.ok
        self.errors += other.errors[:20]


class Crowd:
    """`count` TCP connections to `target`, held by `workers` processes."""

    def __init__(self, target: tuple[str, int], count: int, workers: int = 4) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        share, extra = divmod(count, workers)
        for i in range(workers):
            mine = share + (1 if i < extra else 0)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, target, mine, f"127.0.0.{2 + i}", i), daemon=True
            )
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def _step(self, command: str, timeout: float) -> StepResult:
        for p in self.pipes:
            p.send(command)
        total = StepResult()
        for p in self.pipes:
            if not p.poll(timeout):
                total.errors.append(f"worker did not finish {command!r} in {timeout}s")
                continue
            ok, errors = p.recv()
            total.add(StepResult(ok, errors))
        return total

    def connect(self, timeout: float = 60.0) -> StepResult:
        """Opens every connection; ok = connections open."""
        return self._step("connect", timeout)

    def options(self, timeout: float = 60.0) -> StepResult:
        """One OPTIONS per connection, unique Call-ID; ok = 200s matching their request."""
        return self._step("options", timeout)

    def close(self) -> None:
        for p in self.pipes:
            try:
                p.send("close")
            except OSError:
                pass
        for proc in self.procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for p in self.pipes:
            p.close()


def _worker(pipe: Connection, target: tuple[str, int], count: int, source: str, n: int) -> None:
    raise_fd_limit()
    asyncio.run(_serve(pipe, target, count, source, n))


async def _serve(
    pipe: Connection, target: tuple[str, int], count: int, source: str, n: int
) -> None:
    loop = asyncio.get_running_loop()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            result = await _connect_all(target, count, source, conns)
        elif command == "options":
            result = await _options_all(target, conns, f"w{n}")
        else:
            for _, w in conns:
                w.close()
            return
        pipe.send((result.ok, result.errors[:20]))


async def _connect_all(
    target: tuple[str, int],
    count: int,
    source: str,
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> StepResult:
    result = StepResult()
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one() -> None:
        async with gate:
            try:
                conns.append(
                    await asyncio.wait_for(
                        asyncio.open_connection(*target, local_addr=(source, 0)), 30
                    )
                )
                result.ok += 1
            except (OSError, TimeoutError) as e:
                result.errors.append(f"connect from {source}: {e!r}")

    await asyncio.gather(*(one() for _ in range(count)))
    return result


async def _options_all(
    target: tuple[str, int],
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    prefix: str,
) -> StepResult:
    result = StepResult()
    gate = asyncio.Semaphore(OPTIONS_IN_FLIGHT)
    uri = f"sip:stats@{target[0]}:{target[1]}"

    async def one(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        call_id = f"{prefix}-{i}-crowd"
        local_port = writer.get_extra_info("sockname")[1]
        async with gate:
            try:
                writer.write(
                    sip_request(
                        "OPTIONS",
                        uri,
                        via="SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}",
                        port=local_port,
                        call_id=call_id,
                    )
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value)
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 30)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                result.errors.append(f"{call_id}: {e!r}")
                return
        if status_of(head) == 200 and f"\r\nCall-ID: {call_id}\r\n".encode() in head:
            result.ok += 1
        else:
            result.errors.append(f"{call_id}: {head[:200]!r}")

    await asyncio.gather(*(one(i, r, w) for i, (r, w) in enumerate(conns)))
    return result
