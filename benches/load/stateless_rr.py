"""Stateless proxy for the load harness's Record-Route flow (benches/load/run.sh).

Initial requests (no To tag) go to SIPR_NEXT_HOP, like examples/stateless.py.
In-dialog requests (ACK, BYE) are forwarded by their Route set, else their
Request-URI (the UAS Contact learnt from the 200 OK), which is what a proxy
that stays out of the dialog must do. examples/stateless.py sends them to
SIPR_NEXT_HOP instead, and with SIPR_NEXT_HOP unset it answers the INVITE
(whose Request-URI names the proxy) 404.
"""

import os

import sipr

app = sipr.App()
NEXT_HOP = os.environ.get("SIPR_NEXT_HOP") or None


@app.route
async def route(req: sipr.Request) -> None:
    if req.in_dialog:
        req.forward()
    else:
        req.forward(NEXT_HOP)
