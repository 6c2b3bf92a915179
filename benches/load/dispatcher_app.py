"""Dispatcher route for the load harness (benches/load/run.sh mode `ds`), the
equivalent of kamailio_dispatcher.cfg: set 1 chosen by a hash of the Call-ID,
serial failover on 408/5xx armed. Both destinations reach the SIPp UAS, so
no failover happens in the measured run. ACK/BYE follow our Record-Route in
Rust (uac_rr / uas_rr flow)."""

import os

import sipr

app = sipr.App()
UAS = os.environ.get("SIPR_NEXT_HOP", "sip:127.0.0.1:5090")
ds = sipr.Dispatcher(sets=[(1, UAS, 0, 0, ""), (1, f"{UAS};ds=2", 0, 0, "")], app=app)


@app.route
async def route(req: sipr.Request) -> None:
    await req.relay(ds.targets(1, "hash-callid"))
