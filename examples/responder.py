"""A UAS that answers every request itself: 200 to OPTIONS, REGISTER, BYE and
others, a short ring-then-answer for INVITE. The smallest useful sipr app.

    sipr run examples/responder.py
"""

import sipr

app = sipr.App()

# What this UAS understands (RFC 3261 §8.2.2): extensions it supports, body
# types it accepts.
SUPPORTED: set[str] = set()
METHODS = {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE"}
ACCEPTED_TYPES = {"application/sdp", "text/plain", "multipart/mixed"}


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "ACK":
        return
    if req.method not in METHODS:
        # RFC 3261 §21.5.2: a method this UAS does not implement.
        return req.reply(501, headers={"Allow": ", ".join(sorted(METHODS))})
    # RFC 3261 §8.2.2.3: refuse Require'd extensions we do not support.
    unsupported = [opt for opt in req.headers.getall("Require") if opt not in SUPPORTED]
    if unsupported:
        return req.reply(420, headers={"Unsupported": ", ".join(unsupported)})
    # RFC 3261 §8.2.3: refuse bodies we cannot read.
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if req.body and ctype and ctype not in ACCEPTED_TYPES:
        return req.reply(415, headers={"Accept": ", ".join(sorted(ACCEPTED_TYPES))})
    # RFC 3261 §8.2.2.2 / §21.4.7: an Accept we cannot satisfy.
    accept = req.headers.getall("Accept")
    if (
        req.method == "INVITE"
        and accept
        and not any(
            a.split(";")[0].strip().lower() in ("application/sdp", "*/*", "application/*")
            for a in accept
        )
    ):
        return req.reply(406, headers={"Accept": "application/sdp"})
    if req.method == "INVITE":
        req.reply(180)
    req.reply(200)
