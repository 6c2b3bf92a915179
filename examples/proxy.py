"""A stateful proxy (Kamailio's tm + rr + maxfwd) in a few lines.

    SIPR_TARGETS=sip:127.0.0.1:5090 sipr run examples/proxy.py

- Every initial request is relayed statefully with Record-Route; sipr answers
  100 Trying, absorbs retransmissions, propagates CANCEL and picks the best
  response (RFC 3261 §16.7).
- SIPR_TARGETS is a comma-separated list of next hops, tried in order
  (serial failover) when a hop fails or times out; `SIPR_FORK=1` rings them all
  at once instead (parallel fork: the first 2xx wins, the others are CANCELled).
- In-dialog requests (ACK, BYE, re-INVITE) go to `in_dialog` below because it
  is registered: those that carry our Record-Route follow it (`relay()` with
  no target routes by Route); those without it (a UA that sends them to the
  proxy's own address, like SIPp's default scenario) go to the first target.
  Without an `@app.in_dialog` handler, sipr routes the former in Rust.
"""

import os

import sipr

app = sipr.App()

TARGETS = [t.strip() for t in os.environ.get("SIPR_TARGETS", "").split(",") if t.strip()]
FORK = os.environ.get("SIPR_FORK") == "1"
BRANCH_TIMEOUT = float(os.environ.get("SIPR_BRANCH_TIMEOUT", "30"))


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user is None:
        return req.reply(200)  # keep-alive pings to the proxy itself
    if not TARGETS:
        await req.relay()  # by Route / Request-URI
        return
    if FORK:
        await req.relay(TARGETS, timeout=BRANCH_TIMEOUT)
        return
    for hop in TARGETS:
        resp = await req.relay(hop, timeout=BRANCH_TIMEOUT)
        if resp is None or resp.status < 300 or resp.status in (401, 407) or resp.status >= 600:
            return  # success, a challenge for the caller, or a global refusal
    # Every hop failed: the best failure goes upstream when we return.


@app.in_dialog
async def in_dialog(req: sipr.Request) -> None:
    if "Route" in req.headers or not TARGETS:
        await req.relay()  # follow the route set (our Record-Route)
    else:
        await req.relay(TARGETS[0])  # sent to the proxy itself, without a route
