"""Async route for the load harness (benches/load/run.sh mode `async`).

Each initial INVITE suspends for 1 ms (`anyio.sleep(0.001)`, standing in for
an external lookup) and is then relayed statefully with Record-Route to the
SIPp UAS: the equivalent of Kamailio's async.cfg (tm transaction suspended,
resumed by an async worker, t_relay). Other initial requests are relayed at
once; in-dialog requests follow our Record-Route in Rust (no @app.in_dialog).
"""

import os

import anyio

import sipr

app = sipr.App()
UAS = os.environ.get("SIPR_NEXT_HOP", "sip:127.0.0.1:5090")


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "INVITE":
        await anyio.sleep(0.001)
    await req.relay(UAS)
