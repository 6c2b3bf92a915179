"""NAT + media relay route for the load harness (benches/load/run.sh mode
`nat`): Kamailio's nathelper + rtpengine recipe (kamailio_nat.cfg) in sipr.

Every request is checked for NAT (`behind_nat`, fixed Contact when it is;
never on loopback); every INVITE's SDP offer goes through rtpengine, the
answer in the 18x/200 through `@app.on_reply`, and the session is deleted
on the BYE's 200 (or a failure). Relayed statefully with Record-Route to
the SIPp UAS; ACK and BYE are loose-routed in Rust.

    SIPR_NEXT_HOP    the UAS (default sip:127.0.0.1:5090)
    SIPR_RTPENGINE   rtpengine control socket(s), comma-separated udp:HOST:PORT
"""

import os

import sipr
from sipr.rtpengine import RtpEngine, RtpEngineError

app = sipr.App()
UAS = os.environ.get("SIPR_NEXT_HOP", "sip:127.0.0.1:5090")
rtp = RtpEngine(os.environ["SIPR_RTPENGINE"].split(","), app=app)


@app.on_reply
async def on_reply(reply: sipr.RelayReply) -> None:
    if reply.behind_nat:
        reply.fix_nated_contact()
    await rtp.on_reply(reply)


@app.route
async def route(req: sipr.Request) -> None:
    if req.behind_nat:
        req.fix_nated_contact()
    if req.method == "INVITE":
        try:
            await rtp.offer(req)
        except RtpEngineError:
            return req.reply(503, "Media Relay Unavailable")
    await req.relay(UAS)
