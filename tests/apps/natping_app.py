"""A registrar whose NATed bindings the core keeps alive
(tests/integration/test_natping.py).

    SIPR_NATPING       interval in seconds
    SIPR_DROP_AFTER    unanswered pings before a binding is dropped
"""

import os

import sipr
import sipr.nat

app = sipr.App()
registrar = sipr.Registrar("memory:")
registrar.serve(app)
sipr.nat.keepalive(
    app,
    registrar,
    interval=float(os.environ["SIPR_NATPING"]),
    drop_after=int(os.environ.get("SIPR_DROP_AFTER", "0")),
)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        return await registrar.save(req)
    req.reply(404)
