"""A stateful proxy for the runtime tests (tests/integration/test_runtime.py,
test_reload.py, test_drain.py): relays to SIPR_TARGET, and answers
`OPTIONS sip:<magic>@...` requests itself:

    sip:stats@      200 with X-Stat-<name> counters (core and this module)
    sip:version@    200 with X-Version: VERSION (tests rewrite it to reload)
    sip:cfg@        X-Set: NAME=VALUE → app.config.set(NAME, VALUE): 200 with
                    X-Value, or 400 whose reason is the error
    sip:log@        logs one line from this handler (for the log tests)
    sip:hold@       waits X-Hold seconds, then 200 with X-Version (a handler
                    holding a request, e.g. across a reload)
    sip:silent@     returns without acting (the default reply answers)
    sip:boom@       raises (sipr logs the traceback and answers 500)
    sip:block@      blocks the event loop X-Block seconds (time.sleep), then 200
    sip:gc@         200 with X-GC-Threshold (a,b,c) and X-GC-Frozen (objects)
"""

import asyncio
import gc
import logging
import os
import time
from collections import Counter

import sipr

VERSION = "1"
TARGET = os.environ.get("SIPR_TARGET")
app = sipr.App()
SEEN: Counter[str] = Counter()
log = logging.getLogger("runtime_proxy")


@app.rpc("proxy.version")
async def proxy_version() -> str:
    """The VERSION of the loaded route script."""
    return VERSION


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "stats":
        stats = [*app.stats().items(), *SEEN.items()]
        return req.reply(200, headers={f"X-Stat-{k}": str(v) for k, v in stats})
    if req.method == "OPTIONS" and req.uri.user == "version":
        return req.reply(200, headers={"X-Version": VERSION})
    if req.method == "OPTIONS" and req.uri.user == "cfg":
        name, _, value = (req.headers.get("X-Set") or "").partition("=")
        try:
            now = app.config.set(name.strip(), value.strip())
        except ValueError as e:
            return req.reply(400, str(e))
        return req.reply(200, headers={"X-Value": str(now)})
    if req.method == "OPTIONS" and req.uri.user == "log":
        log.warning("hello from the handler")
        return req.reply(200)
    if req.method == "OPTIONS" and req.uri.user == "hold":
        await asyncio.sleep(float(req.headers.get("X-Hold") or "1"))
        return req.reply(200, headers={"X-Version": VERSION})
    if req.method == "OPTIONS" and req.uri.user == "silent":
        return
    if req.method == "OPTIONS" and req.uri.user == "block":
        time.sleep(float(req.headers.get("X-Block") or "0.1"))
        return req.reply(200)
    if req.method == "OPTIONS" and req.uri.user == "gc":
        threshold = ",".join(map(str, gc.get_threshold()))
        frozen = str(gc.get_freeze_count())
        return req.reply(200, headers={"X-GC-Threshold": threshold, "X-GC-Frozen": frozen})
    if req.method == "OPTIONS" and req.uri.user == "boom":
        raise RuntimeError("boom in the route")
    SEEN[f"app.{req.method}"] += 1
    await req.relay(TARGET)
