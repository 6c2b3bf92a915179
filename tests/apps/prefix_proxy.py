"""Prefix-routing proxy for tests/sipp/test_prefix_routing.py: gateways and
rules from the SQLite store in SIPR_ROUTES."""

import os

import sipr

app = sipr.App()
routes = sipr.PrefixRouter(f"sqlite://{os.environ['SIPR_ROUTES']}", app=app)


@app.route
async def route(req: sipr.Request) -> None:
    await req.relay(routes.targets(req))
