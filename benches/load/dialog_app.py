"""Stateful proxy with dialogs and accounting for the load harness
(benches/load/run.sh mode `dlg`): the equivalent of kamailio_dialog_acc.cfg.

Every INVITE is tracked (profile ("user", From user), default lifetime) and
accounted, so the call gets INVITE, ACK and BYE request records and a CDR,
written to SQLite (`SIPR_ACC`, default acc.db in the data dir) in batches.
ACK and BYE follow our Record-Route in Rust and update the dialog there.
"""

import os

import sipr

app = sipr.App()
sipr.Accounting().serve(app)
UAS = os.environ.get("SIPR_NEXT_HOP", "sip:127.0.0.1:5090")


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "INVITE":
        req.track_dialog(profiles=[("user", req.from_.uri.user or "")])
        req.account()
    await req.relay(UAS)
