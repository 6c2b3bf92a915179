"""A proxy that sends every call's media through rtpengine
(tests/integration/test_rtpengine.py, tests/nat/).

    SIPR_TARGET      next hop of initial INVITEs (else the Request-URI)
    SIPR_RTPENGINE   comma list of rtpengine control sockets (udp:HOST:PORT)
    SIPR_IN_DIALOG   "1": in-dialog requests reach Python (`rtp.manage`: the
                     answer of a late offer in the ACK, delete on BYE)

The route is the two lines an operator writes: `rtp.offer(req)` and
`@app.on_reply` → `rtp.on_reply` (answer in 18x/2xx, delete on failures and
on the BYE's 200). No rtpengine left: 503.
"""

import os

import sipr
from sipr.rtpengine import RtpEngine, RtpEngineError

TARGET = os.environ.get("SIPR_TARGET") or None
app = sipr.App()
rtp = RtpEngine(
    os.environ["SIPR_RTPENGINE"].split(","), app=app, timeout=0.2, retries=1, recheck=0.3
)
app.on_reply(rtp.on_reply)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "stats":
        return req.reply(200, headers={f"X-Stat-{k}": str(v) for k, v in app.stats().items()})
    if req.method == "INVITE":
        try:
            await rtp.offer(req)
        except RtpEngineError:
            return req.reply(503, "Media Relay Unavailable")
    await req.relay(TARGET)


if os.environ.get("SIPR_IN_DIALOG") == "1":

    @app.in_dialog
    async def in_dialog(req: sipr.Request) -> None:
        await rtp.manage(req)
        await req.relay()
