"""Test app for `sipr run --workers N` (tests/sipp/test_workers.py).

    SIPR_TARGETS   comma list of next hops for calls (serial failover); without
                   it calls go to the contacts registered for the R-URI
    SIPR_STORE     registrar store URL (default memory:)
    SIPR_AUTH=1    REGISTERs need digest credentials (alice/alice, bob/bob)
    SIPR_VERSION_FILE  a file whose text `OPTIONS sip:whoami@` reports: a
                   reload (SIGHUP) reads it again

`OPTIONS sip:whoami@...` is answered 200 with `X-Worker-Pid` and
`X-App-Version`: which worker answered and which code it runs.
"""

import os
from pathlib import Path

import sipr

TARGETS = [t.strip() for t in os.environ.get("SIPR_TARGETS", "").split(",") if t.strip()]
VERSION_FILE = os.environ.get("SIPR_VERSION_FILE")
VERSION = Path(VERSION_FILE).read_text().strip() if VERSION_FILE else "1"
AUTH = (
    sipr.DigestAuth("sipr", {"alice": "alice", "bob": "bob"})
    if os.environ.get("SIPR_AUTH") == "1"
    else None
)

registrar = sipr.Registrar(os.environ.get("SIPR_STORE", "memory:"), min_expires=1)
app = sipr.App()


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS" and req.uri.user == "whoami":
        headers = {"X-Worker-Pid": str(os.getpid()), "X-App-Version": VERSION}
        return req.reply(200, headers=headers)
    if req.method == "REGISTER":
        if AUTH is not None and not await AUTH.check(req):
            return
        return await registrar.save(req)
    if TARGETS:
        for hop in TARGETS:
            resp = await req.relay(hop)
            if resp.status < 300 or resp.status >= 600:
                return
        return
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(480 if req.method == "INVITE" else 404)
    await req.relay(contacts, timeout=10)
