"""A stateful proxy whose response handlers mark what they see
(tests/integration/test_on_reply.py).

    SIPR_TARGET    the next hop of every INVITE
    SIPR_ONREPLY   "app": `@app.on_reply` (plain function) adds X-Seen;
                   "relay": `relay(on_reply=...)` (async) adds X-Relay-Seen and
                   replaces a 200's body; anything else: no response handler

`OPTIONS sip:stats@...` answers the counters as `X-Stat-<name>` headers.
"""

import asyncio
import os

import sipr

TARGET = os.environ.get("SIPR_TARGET", "")
MODE = os.environ.get("SIPR_ONREPLY", "")

app = sipr.App()


if MODE == "app":

    @app.on_reply
    def mark(reply: sipr.RelayReply) -> None:
        reply.headers["X-Seen"] = f"{reply.status} {reply.method}"


async def mark_async(reply: sipr.RelayReply) -> None:
    await asyncio.sleep(0.01)  # the response waits for the handler
    reply.headers.add("X-Relay-Seen", str(reply.status))
    if reply.status == 200:
        reply.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "stats":
        return req.reply(200, headers={f"X-Stat-{k}": str(v) for k, v in app.stats().items()})
    if MODE == "relay":
        await req.relay(TARGET, on_reply=mark_async)
    else:
        await req.relay(TARGET)
