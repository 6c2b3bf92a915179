"""Test app: an in-memory registrar that relays every other out-of-dialog
request to the contacts registered for its Request-URI (tests/integration/
test_tls.py: UAs registered over TLS are reached over their connection)."""

import sipr

registrar = sipr.Registrar("memory:", min_expires=1, max_expires=3600)
app = sipr.App()


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        return await registrar.save(req)
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(480 if req.method == "INVITE" else 404)
    await req.relay(contacts[0], timeout=10)
