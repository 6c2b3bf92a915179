"""Stateful proxy for the load harness (benches/load/run.sh modes `sf`, `sf_rr`).

Every initial request reads two headers and is relayed statefully (with
Record-Route) to the SIPp UAS: the equivalent of Kamailio's reference
stateful.cfg (tm + rr + maxfwd), with the routing decision in Python.

- Without SIPR_IN_DIALOG (mode `sf_rr`, uac_rr.xml / uas_rr.xml): no
  @app.in_dialog handler, so ACK and BYE that carry our Record-Route are
  routed in Rust (loose routing) and never reach Python.
- SIPR_IN_DIALOG=1 (mode `sf`, SIPp's default flow): ACK and BYE are addressed
  to the proxy itself, without a Route, so they go to `in_dialog`, which
  relays them to the UAS (Kamailio's `uri == myself` branch).
"""

import os

import sipr

app = sipr.App()
UAS = os.environ.get("SIPR_NEXT_HOP", "sip:127.0.0.1:5090")


@app.route
async def route(req: sipr.Request) -> None:
    req.headers.get("From")
    req.headers.get("Call-ID")
    await req.relay(UAS)


if os.environ.get("SIPR_IN_DIALOG") == "1":

    @app.in_dialog
    async def in_dialog(req: sipr.Request) -> None:
        await req.relay(UAS)
