"""A test app whose behaviour is chosen by the Request-URI user part."""

import asyncio

import sipr

app = sipr.App(max_pending=4, retry_after=7)


@app.route
async def route(req: sipr.Request) -> None:
    user = req.uri.user
    if user == "raise":
        raise RuntimeError("handler bug")
    if user == "silent":
        return
    if user == "hang":
        # Suspends for a while, holding one of the max_pending slots.
        await asyncio.sleep(1.0)
        return req.reply(200)
    if user == "twice":
        req.reply(200)
        try:
            req.reply(200)
        except sipr.TransactionError:
            return
        raise AssertionError("a second final answer must raise TransactionError")
    if user == "headers":
        return req.reply(
            200,
            headers={
                "X-Method": req.method,
                "X-Subject": req.headers.get("s", "none"),
                "X-Vias": str(len(req.headers.getall("Via"))),
                "X-Source": f"{req.source.transport}:{req.source.host}",
                "X-CSeq": str(req.cseq.number),
                "X-From-Tag": req.from_.tag or "",
            },
        )
    req.reply(200)
