"""Micro-benchmarks of the Python-facing costs (pytest-benchmark).

    python -m pytest benches/test_bridge.py --benchmark-only [-s]

Not part of the test suite (testpaths = tests). With `-s` each batch test prints
its cost per request. Layers, cheapest first:

- `sipr.URI(...)`: parsing a URI from Python (Rust parse + PyO3 object).
- poll: `Core.poll_udp` of a batch of datagrams already queued on the socket
  (recvmmsg + parse + one `Request` object each), nothing else.
- poll+read: the same plus the attribute reads a routing script typically does.
- poll+forward: the same plus `req.forward(target)` (Rust build_forward + send),
  i.e. what examples/stateless.py costs per request without asyncio.
- dispatch: the real server path, `sipr.server.Server._on_udp` creating one
  asyncio task per request running the stateless handler, run to completion.

The datagrams are sent (and the forwarded copies drained) in the untimed setup
of each round; the sender's cost is not measured. Every round uses new branches
and Call-IDs (the stateful core would absorb repeats as retransmissions); the
core's timers are not driven, so transactions accumulate over the run (a few
ten thousand), as they would not in a server.
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

INVITE = (
    "INVITE sip:bob@127.0.0.1:5090 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK776asdhds{n};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710-{n}@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:{port};transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    "Supported: replaces, timer, 100rel\r\n"
    "User-Agent: ExamplePhone/4.2.1\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {clen}\r\n"
    "\r\n"
)
SDP = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


async def _server(app: sipr.App) -> Server:
    """A Server made on the loop it will run on (it keeps that loop)."""
    return Server(app, ["udp:127.0.0.1:0"])


class Rig:
    """A core on an ephemeral UDP port, a client socket that feeds it and a
    sink socket that plays the next hop."""

    def __init__(self) -> None:
        self.core = _core.Core(["udp:127.0.0.1:0"])
        _, host, self.port = self.core.local_addrs()[0]
        self.addr = (host, self.port)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.setblocking(False)
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sink.setblocking(False)
        self.target = f"sip:127.0.0.1:{self.sink.getsockname()[1]}"
        self.cport = self.client.getsockname()[1]
        self.round = 0

    def feed(self) -> None:
        """Untimed setup of one round: drain what was forwarded or answered,
        queue BATCH requests on the core's socket."""
        for s in (self.sink, self.client):
            try:
                while True:
                    s.recv(65536)
            except BlockingIOError:
                pass
        # A fresh branch and Call-ID every round: the core keeps transactions,
        # and a repeated branch would be absorbed as a retransmission.
        self.round += 1
        for n in range(BATCH):
            d = INVITE.format(port=self.cport, n=f"{self.round}x{n}", clen=len(SDP)) + SDP
            self.client.sendto(d.encode(), self.addr)

    def close(self) -> None:
        self.core.stop()
        self.client.close()
        self.sink.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def per_request(benchmark, what: str) -> None:  # type: ignore[no-untyped-def]
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    med = stats.stats.median
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["median_us_per_request"] = round(med / BATCH * 1e6, 3)
    print(f"\n{what}: {med / BATCH * 1e6:.2f} µs per request (median round / {BATCH})")


def run_batch(benchmark, rig: Rig, fn, what: str) -> None:  # type: ignore[no-untyped-def]
    def setup():  # type: ignore[no-untyped-def]
        rig.feed()
        return (), {}

    # Sanity check outside the timing: the whole batch arrives as requests.
    rig.feed()
    assert fn() == BATCH
    benchmark.pedantic(fn, setup=setup, rounds=300, iterations=1, warmup_rounds=10)
    per_request(benchmark, what)


# --------------------------------------------------------------------- URI


def test_uri_parse_simple(benchmark) -> None:  # type: ignore[no-untyped-def]
    u = benchmark(sipr.URI, "sip:alice@atlanta.example.com")
    assert u.host == "atlanta.example.com"


def test_uri_parse_full(benchmark) -> None:  # type: ignore[no-untyped-def]
    text = "sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr;maddr=192.0.2.1?subject=x"
    u = benchmark(sipr.URI, text)
    assert u.port == 5061


def test_uri_parse_and_read(benchmark) -> None:  # type: ignore[no-untyped-def]
    def f() -> tuple[object, ...]:
        u = sipr.URI("sip:alice@atlanta.example.com:5060;transport=udp")
        return (u.user, u.host, u.port, u.param("transport"))

    assert benchmark(f)[3] == "udp"


# ------------------------------------------------------ end-to-end bridge


def test_poll_udp(benchmark, rig: Rig) -> None:  # type: ignore[no-untyped-def]
    core = rig.core

    def f() -> int:
        return len(core.poll_udp(0))

    run_batch(benchmark, rig, f, "poll_udp")


def test_poll_udp_read_attrs(benchmark, rig: Rig) -> None:  # type: ignore[no-untyped-def]
    core = rig.core

    def f() -> int:
        n = 0
        for req in core.poll_udp(0):
            # What a routing script typically looks at.
            _ = (req.method, req.in_dialog, req.call_id, req.from_.uri.user, req.uri.host)
            _ = req.headers.get("User-Agent")
            n += 1
        return n

    run_batch(benchmark, rig, f, "poll_udp + attribute reads")


def test_poll_udp_forward(benchmark, rig: Rig) -> None:  # type: ignore[no-untyped-def]
    core, target = rig.core, rig.target

    def f() -> int:
        n = 0
        for req in core.poll_udp(0):
            req.forward(target)
            n += 1
        return n

    run_batch(benchmark, rig, f, "poll_udp + forward")


def test_dispatch_stateless(benchmark, rig: Rig) -> None:  # type: ignore[no-untyped-def]
    """The server's own path: one asyncio task per request running the
    examples/stateless.py handler (req.forward(NEXT_HOP))."""
    target = rig.target
    app = sipr.App()

    @app.route
    async def route(req: sipr.Request) -> None:
        req.forward(target)

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(_server(app))
    server.core = rig.core

    async def one_round() -> int:
        server._on_udp(0)
        n = len(server.tasks)
        await asyncio.gather(*server.tasks)
        return n

    def f() -> int:
        return loop.run_until_complete(one_round())

    try:
        run_batch(benchmark, rig, f, "dispatch (asyncio task + handler + forward)")
    finally:
        loop.close()


def test_loop_round_overhead(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Baseline for test_dispatch_stateless: one run_until_complete round with
    nothing in it (subtract it / BATCH from the dispatch figure)."""
    loop = asyncio.new_event_loop()

    async def empty() -> int:
        return 0

    try:
        benchmark(lambda: loop.run_until_complete(empty()))
    finally:
        loop.close()
