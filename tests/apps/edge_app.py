"""Test app for issue 12's edge checks (tests/integration/test_edge.py).

    SIPR_FORCE_RPORT=1   App(force_rport=True)
    SIPR_TARGET          where other requests go: relayed statefully with
                         Record-Route, or forwarded statelessly with
    SIPR_STATELESS=1

`OPTIONS sip:ping@...` is answered 200; `OPTIONS sip:rport@...` calls
`req.force_rport()` first (the per-request form).
"""

import os

import sipr

app = sipr.App(force_rport=os.environ.get("SIPR_FORCE_RPORT") == "1")
TARGET = os.environ.get("SIPR_TARGET")
STATELESS = os.environ.get("SIPR_STATELESS") == "1"


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user in ("ping", "rport"):
        if req.uri.user == "rport":
            req.force_rport()
        return req.reply(200)
    if STATELESS:
        req.forward(TARGET)
        return
    await req.relay(TARGET)
