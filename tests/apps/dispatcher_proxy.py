"""Dispatcher proxy for tests/sipp/test_dispatcher.py: set 1 from the SQLite
store in SIPR_DS, probed every SIPR_PROBE seconds; calls go to
`ds.targets(set=1, algo=SIPR_ALGO)`.

`OPTIONS sip:which@...` answers 200 with `X-Destination:` the destination its
Call-ID would be sent to with hash-callid.
"""

import os

import sipr

app = sipr.App()
ALGO = os.environ.get("SIPR_ALGO", "round-robin")
ds = sipr.Dispatcher(
    f"sqlite://{os.environ['SIPR_DS']}",
    app=app,
    probe_interval=float(os.environ.get("SIPR_PROBE", "1")),
)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "which":
        chosen = ds.select(req, 1, "hash-callid")
        return req.reply(200, headers={"X-Destination": chosen[0] if chosen else "none"})
    await req.relay(ds.targets(set=1, algo=ALGO))
