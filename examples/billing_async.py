"""Ask a billing service before relaying each call: the INVITE's transaction
waits in Rust (retransmissions absorbed, 100 Trying sent) while the handler
awaits HTTP, and every other call is served meanwhile.

    python examples/billing_service.py --port 8089 &
    SIPR_BILLING=127.0.0.1:8089 SIPR_TARGETS=sip:127.0.0.1:5090 sipr run examples/billing_async.py

A caller billing refuses gets 402. A CANCEL while billing is being asked
cancels the handler (counted in `counters["cancelled"]`). If billing never
answers, the route deadline (5 s here) answers 503. If billing cannot be
reached (connection refused, bad SIPR_BILLING), the handler raises and the
caller gets 500, logged with the Call-ID.

`OPTIONS sip:billing-stats@...` answers 200 with the counters above and the
server's `app.stats()` as X- headers (`handlers.suspended` -> X-handlers-suspended).
Tests tune SIPR_ROUTE_DEADLINE (seconds, default 5) and SIPR_MAX_PENDING
(requests held by handlers before the core sheds with 503, default 10000).
"""

import asyncio
import os

import sipr

app = sipr.App(
    route_deadline=float(os.environ.get("SIPR_ROUTE_DEADLINE", "5")),
    deadline_reply=(503, "Billing Unavailable"),
    max_pending=int(os.environ.get("SIPR_MAX_PENDING", "10000")),
)

BILLING = os.environ.get("SIPR_BILLING", "127.0.0.1:8089")
BILLING_HOST, _, BILLING_PORT = BILLING.rpartition(":")
if not BILLING_HOST or not BILLING_PORT.isdigit():
    raise ValueError(f"SIPR_BILLING must be HOST:PORT, got {BILLING!r}")
TARGET = os.environ.get("SIPR_TARGETS") or None
counters = {"authorized": 0, "refused": 0, "cancelled": 0}


async def authorize(user: str) -> bool:
    """GET /authorize?user=USER on the billing service: 'yes' or 'no'."""
    reader, writer = await asyncio.open_connection(BILLING_HOST.strip("[]"), int(BILLING_PORT))
    try:
        writer.write(f"GET /authorize?user={user} HTTP/1.1\r\nHost: billing\r\n\r\n".encode())
        await writer.drain()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return (await reader.readexactly(length)) == b"yes"
    finally:
        writer.close()


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "billing-stats":
        stats = {k.replace(".", "-"): v for k, v in app.stats().items()}
        return req.reply(200, headers={f"X-{k}": v for k, v in {**counters, **stats}.items()})
    if req.method == "INVITE":
        try:
            allowed = await authorize(req.from_.uri.user or "")
        except asyncio.CancelledError:
            counters["cancelled"] += 1
            raise
        if not allowed:
            counters["refused"] += 1
            return req.reply(402, "Payment Required")
        counters["authorized"] += 1
    await req.relay(TARGET)


@app.in_dialog
async def in_dialog(req: sipr.Request) -> None:
    await req.relay(TARGET)
