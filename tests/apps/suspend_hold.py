"""Test app for suspension at scale (issue 4, point 5): every INVITE suspends
on one shared event until `OPTIONS sip:release@` sets it; then each held
handler answers 480. `OPTIONS sip:stats@` answers app.stats() as X- headers
(dots as dashes), plus X-held (handlers waiting on the event now).

SIPR_MAX_PENDING (default 60000) and SIPR_ROUTE_DEADLINE (default 300 s) are
raised so that neither the overload bound nor the deadline interferes."""

import asyncio
import os

import sipr

app = sipr.App(
    max_pending=int(os.environ.get("SIPR_MAX_PENDING", "60000")),
    route_deadline=float(os.environ.get("SIPR_ROUTE_DEADLINE", "300")),
)
gate = asyncio.Event()
held = 0


@app.route
async def route(req: sipr.Request) -> None:
    global gate, held
    if req.method == "OPTIONS":
        if req.uri.user == "release":
            gate.set()
            gate = asyncio.Event()  # later INVITEs wait for the next release
            return req.reply(200)
        stats = {k.replace(".", "-"): v for k, v in app.stats().items()}
        return req.reply(200, headers={"X-held": held, **{f"X-{k}": v for k, v in stats.items()}})
    if req.method == "INVITE":
        held += 1
        try:
            await gate.wait()
        finally:
            held -= 1
        return req.reply(480)
    req.reply(405)
