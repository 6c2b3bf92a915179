"""Stateful proxy for the issue-3 SIPp acceptance tests (tests/sipp/test_stateful.py).

Unlike examples/proxy.py it registers no `@app.in_dialog`, so in-dialog
requests that carry our Record-Route are loose-routed in Rust (no Python).

    SIPR_TARGETS   comma list of next hops: serial failover (default), or
    SIPR_FORK=1    a parallel fork to all of them
    SIPR_TIMEOUT   seconds, the relay() round timeout (default: none)
    SIPR_T1        seconds, RFC 3261 T1 (shorter timers make transactions expire fast)

`OPTIONS sip:stats@...` is answered 200 with the core's counters as
`X-Stat-<name>: <value>` headers (the stats are not exposed over the wire yet),
plus `app.<METHOD>` / `app.in_dialog.<METHOD>`: the requests Python saw.
"""

import os
from collections import Counter

import sipr

TARGETS = [t.strip() for t in os.environ.get("SIPR_TARGETS", "").split(",") if t.strip()]
FORK = os.environ.get("SIPR_FORK") == "1"
TIMEOUT = float(os.environ["SIPR_TIMEOUT"]) if os.environ.get("SIPR_TIMEOUT") else None
TIMERS = {"t1": float(os.environ["SIPR_T1"])} if os.environ.get("SIPR_T1") else None

app = sipr.App(timers=TIMERS)
SEEN: Counter[str] = Counter()


@app.route
async def route(req: sipr.Request) -> None:
    if req.in_dialog:
        # In dialog without our Route (never expected in these tests): by R-URI.
        SEEN[f"app.in_dialog.{req.method}"] += 1
        req.relay()
        return
    if req.method == "OPTIONS" and req.uri.user == "stats":
        stats = [*app.stats().items(), *SEEN.items()]
        return req.reply(200, headers={f"X-Stat-{k}": str(v) for k, v in stats})
    SEEN[f"app.{req.method}"] += 1
    if not TARGETS:
        await req.relay(timeout=TIMEOUT)
        return
    if FORK:
        await req.relay(TARGETS, timeout=TIMEOUT)
        return
    for hop in TARGETS:
        resp = await req.relay(hop, timeout=TIMEOUT)
        if resp.status < 300 or resp.status in (401, 407) or resp.status >= 600:
            return
