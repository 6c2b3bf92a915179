"""Proxy for the RFC 3263 tests (tests/sipp/test_dns_routing.py): each
request goes to the domain its R-URI user maps to, resolved by the core.

    SIPR_DOMAINS            user=domain,... (e.g. bob=svc.test,carol=tcp.test)
    SIPR_FAILOVER_TIMEOUT   seconds a destination with alternatives may stay silent

`OPTIONS sip:ping@...` is answered by the route itself (the loop-latency probe).
"""

import os

import sipr

DOMAINS = dict(
    item.split("=", 1) for item in os.environ.get("SIPR_DOMAINS", "").split(",") if "=" in item
)

app = sipr.App()


@app.on_startup
async def settings() -> None:
    if os.environ.get("SIPR_FAILOVER_TIMEOUT"):
        app.config.set("dns.failover_timeout", os.environ["SIPR_FAILOVER_TIMEOUT"])


@app.route
async def route(req: sipr.Request) -> None:
    user = req.uri.user or ""
    if req.method == "OPTIONS" and user == "ping":
        return req.reply(200)
    domain = DOMAINS.get(user)
    if domain is None:
        return req.reply(404)
    req.uri = f"sip:{user}@{domain}"
    await req.relay()
