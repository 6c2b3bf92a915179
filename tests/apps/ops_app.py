"""Test app for the control-plane tests (tests/integration/test_ctl.py,
test_metrics.py): a registrar for REGISTER, a stateful proxy for the rest
(to SIPR_TARGET, else the registered contact of the Request-URI's AoR), and
two app control methods."""

import os

import sipr

app = sipr.App()
registrar = sipr.Registrar("memory:", min_expires=1)
TARGET = os.environ.get("SIPR_TARGET")


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        return await registrar.save(req)
    if TARGET:
        await req.relay(TARGET)
        return
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(404)
    await req.relay(contacts[0])


@app.rpc("app.echo")
async def echo(*words: object) -> list[object]:
    """Returns its params."""
    return list(words)


@app.rpc("app.add")
async def add(a: int, b: int) -> int:
    """Adds two integers."""
    if not isinstance(a, int) or not isinstance(b, int):
        raise ValueError("app.add takes two integers")
    return a + b
