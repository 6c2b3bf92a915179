"""Test app: registrar (memory store) and calls to registered contacts, for
clients on any transport (tests/integration/test_websocket.py).

No `@app.in_dialog`: in-dialog requests carry our Record-Route and are
loose-routed in Rust, which is how they reach a WebSocket client (its
connection is named in our Record-Route, RFC 7118 §5).
"""

import sipr

registrar = sipr.Registrar("memory:", min_expires=1)
app = sipr.App()


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        return await registrar.save(req)
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(480 if req.method == "INVITE" else 404)
    await req.relay(contacts, timeout=10)
