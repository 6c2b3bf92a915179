"""A stateless proxy: every request goes to one next hop (Kamailio's
`forward()`), responses come back along the Via path without touching Python.

    SIPR_NEXT_HOP=sip:127.0.0.1:5090 sipr run examples/stateless.py

Without SIPR_NEXT_HOP, requests are routed by their Route header or
Request-URI (and answered 404 when that names this proxy).
"""

import os

import sipr

app = sipr.App()
NEXT_HOP = os.environ.get("SIPR_NEXT_HOP") or None


@app.route
async def route(req: sipr.Request) -> None:
    req.forward(NEXT_HOP)
