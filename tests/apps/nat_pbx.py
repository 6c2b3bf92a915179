"""A PBX for phones behind NAT (tests/integration/test_nat_lab.py): the
Kamailio nathelper + rtpengine recipe in sipr.

    SIPR_RTPENGINE   comma list of rtpengine control sockets (udp:HOST:PORT)
    SIPR_NATPING     keepalive interval in seconds for ping.example phones

Two registrars: phones of `ping.example` get NAT keepalives from the core,
phones of `plain.example` do not (the lab's control group).
"""

import os

import sipr
import sipr.nat
from sipr.rtpengine import RtpEngine, RtpEngineError

app = sipr.App()
pinged = sipr.Registrar("memory:", domains=["ping.example"])
plain = sipr.Registrar("memory:", domains=["plain.example"])
pinged.serve(app)
plain.serve(app)
sipr.nat.keepalive(app, pinged, interval=float(os.environ.get("SIPR_NATPING", "20")))
rtp = RtpEngine(os.environ["SIPR_RTPENGINE"].split(","), app=app)
REGISTRARS = {"ping.example": pinged, "plain.example": plain}


@app.on_reply
async def on_reply(reply: sipr.RelayReply) -> None:
    if reply.behind_nat:
        reply.fix_nated_contact()
    await rtp.on_reply(reply)


@app.route
async def route(req: sipr.Request) -> None:
    registrar = REGISTRARS.get(req.uri.host)
    if req.method == "REGISTER":
        if registrar is None:
            return req.reply(403, "Domain Not Served")
        return await registrar.save(req)
    if req.behind_nat:
        req.fix_nated_contact()
    if req.method != "INVITE":
        return await req.relay()
    if registrar is None:
        return req.reply(404)
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(480, "Temporarily Unavailable")
    try:
        await rtp.offer(req)
    except RtpEngineError:
        return req.reply(503, "Media Relay Unavailable")
    await req.relay(contacts[0], timeout=8)
