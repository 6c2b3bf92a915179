"""Micro-benchmark (issue 4, point 6): what suspending and resuming a route
handler costs per request on the dispatcher path (target <= 10 µs).

    python -m pytest benches/test_suspend.py --benchmark-only -s

Not part of the test suite (testpaths = tests). Each round queues BATCH
OPTIONS requests (new branches and Call-IDs) on an in-process core's UDP
socket in the untimed setup, then times the server's own path,
`sipr.server.Server._on_udp` plus running the event loop until every handler
task is done, for three handlers that all answer 200:

- inline:  `req.reply(200)` without awaiting (the first step runs inline, no
           deadline is armed, nothing is counted as suspended);
- sleep0:  `await asyncio.sleep(0)` first: the handler suspends once (deadline
           armed, counted suspended) and is resumed on the next loop pass;
- future:  awaits a future that a loop callback resolves: a suspension on a
           real waiter, as when awaiting I/O.

The suspend+resume overhead per request is (sleep0 - inline) and
(future - inline) from the medians; with `-s` the figures are printed, and
the last run asserts the sleep0 overhead is within the target.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

import sipr
from sipr import _core
from sipr.server import Server

BATCH = 64
ROUNDS = 400
TARGET_US = 10.0

OPTIONS = (
    "OPTIONS sip:bench@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsusp{n};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:bench@127.0.0.1>\r\n"
    "From: <sip:alice@127.0.0.1>;tag=1928301774\r\n"
    "Call-ID: susp-{n}@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

#: Median seconds per round, by handler kind (filled as the tests run).
MEDIANS: dict[str, float] = {}


def _handler(kind: str):  # type: ignore[no-untyped-def]
    if kind == "inline":

        async def route(req: sipr.Request) -> None:
            req.reply(200)

    elif kind == "sleep0":

        async def route(req: sipr.Request) -> None:
            await asyncio.sleep(0)
            req.reply(200)

    else:

        async def route(req: sipr.Request) -> None:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut
            req.reply(200)

    return route


async def _server(app: sipr.App) -> Server:
    """A Server made on the loop it will run on (it keeps that loop)."""
    return Server(app, ["udp:127.0.0.1:0"])


class Rig:
    def __init__(self, kind: str) -> None:
        app = sipr.App(max_pending=1_000_000)
        app.route(_handler(kind))
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(_server(app))
        self.core = _core.Core(["udp:127.0.0.1:0"], max_pending=1_000_000)
        self.server.core = self.core
        app._core = self.core
        app._server = self.server
        # What Server.serve() sets up before reading, minus the sockets' readers.
        from sipr._deadlines import Deadlines
        from sipr._watchdog import Watchdog

        self.server.deadlines = Deadlines(self.loop, self.server._expire)
        self.server.watchdog = Watchdog(self.loop, app.stall_threshold)  # not started
        _, host, port = self.core.local_addrs()[0]
        self.addr = (host, port)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.client.setblocking(False)
        self.cport = self.client.getsockname()[1]
        self.round = 0
        self.kind = kind

    def feed(self) -> None:
        try:
            while True:
                self.client.recv(65536)
        except BlockingIOError:
            pass
        self.round += 1
        for n in range(BATCH):
            d = OPTIONS.format(port=self.cport, n=f"{self.kind}{self.round}x{n}")
            self.client.sendto(d.encode(), self.addr)

    def one_round(self) -> int:
        server = self.server

        async def go() -> int:
            server._on_udp(0)
            n = len(server.tasks)
            if server.tasks:
                await asyncio.gather(*server.tasks)
            return n

        return self.loop.run_until_complete(go())

    def answered(self) -> int:
        n = 0
        try:
            while True:
                if self.client.recv(65536).startswith(b"SIP/2.0 200"):
                    n += 1
        except BlockingIOError:
            pass
        return n

    def close(self) -> None:
        self.server.deadlines.close()  # type: ignore[union-attr]
        self.core.stop()
        self.loop.close()
        self.client.close()


@pytest.fixture
def rig(request) -> Iterator[Rig]:  # type: ignore[no-untyped-def]
    r = Rig(request.param)
    yield r
    r.close()


@pytest.mark.parametrize("rig", ["inline", "sleep0", "future"], indirect=True)
def test_dispatch(benchmark, rig: Rig) -> None:  # type: ignore[no-untyped-def]
    # Sanity check outside the timing: every request is answered, and the
    # suspending handlers were counted as suspended and finished.
    rig.feed()
    rig.one_round()
    assert rig.answered() == BATCH
    assert rig.server.suspended == 0 and rig.core.pending == 0

    def setup():  # type: ignore[no-untyped-def]
        rig.feed()
        return (), {}

    benchmark.pedantic(rig.one_round, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=20)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    med = stats.stats.median
    MEDIANS[rig.kind] = med
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["median_us_per_request"] = round(med / BATCH * 1e6, 3)
    print(f"\n{rig.kind}: {med / BATCH * 1e6:.2f} µs per request (median round / {BATCH})")

    if {"inline", "sleep0", "future"} <= MEDIANS.keys():
        _summary()


def _summary() -> None:
    """After the three runs (parametrize order): the suspend + resume overhead
    per request, against the target."""
    base = MEDIANS["inline"] / BATCH * 1e6
    for kind in ("sleep0", "future"):
        over = MEDIANS[kind] / BATCH * 1e6 - base
        print(f"suspend+resume overhead ({kind} - inline): {over:.2f} µs per request")
    over = MEDIANS["sleep0"] / BATCH * 1e6 - base
    assert over <= TARGET_US, f"suspend+resume costs {over:.2f} µs per request (target {TARGET_US})"
