"""Test app: a bare registrar over the store named by SIPR_STORE (memory:,
sqlite:///..., redis://...), with lookup/remove reachable over SIP.

- REGISTER to a domain other than clamp.test: min Expires SIPR_MIN_EXPIRES
  (default 1), max 3600, default 3600.
- REGISTER to clamp.test: min 30, max 120, default 90, at most 3 contacts.
- `OPTIONS sip:lookup@...` with `X-AoR: sip:user@host`: 200 whose JSON body
  lists `registrar.lookup()` (uri, q, expires, received, path, next_hop).
- `OPTIONS sip:remove@...` with `X-AoR`: `registrar.remove()`, count in X-Removed.
- SIPR_AUTH=1: REGISTERs need digest (realm "sipr", credentials from the store,
  or the users of SIPR_USERS="alice:secret,..." in a dict; nonce lifetime
  SIPR_NONCE_TTL seconds).
- SIPR_NATIVE=1: both registrars are served by the core (`Registrar.serve`),
  clamp.test first; the route below then sees only what the core hands on.
  A store written in Python (redis://) has no native path: `serve()`
  declines and every REGISTER comes to the route (docs/decisions/0028).
- `OPTIONS sip:stats@...`: 200 with X-Native: REGISTERs answered natively.
"""

import json
import os

import sipr
from sipr.store import NativeStore, open_store

store = open_store(os.environ.get("SIPR_STORE", "memory:"))
registrar = sipr.Registrar(
    store, min_expires=int(os.environ.get("SIPR_MIN_EXPIRES", "1")), max_expires=3600
)
NATIVE = os.environ.get("SIPR_NATIVE") == "1"
clamped = sipr.Registrar(
    store, domains=["clamp.test"], min_expires=30, max_expires=120, default_expires=90,
    max_contacts=3,
)  # fmt: skip
USERS = dict(u.split(":", 1) for u in os.environ.get("SIPR_USERS", "").split(",") if ":" in u)
auth = (
    sipr.DigestAuth(
        "sipr",
        credentials=USERS or store,
        algorithms=("SHA-256", "MD5"),
        nonce_ttl=float(os.environ.get("SIPR_NONCE_TTL", "300")),
    )
    if os.environ.get("SIPR_AUTH") == "1"
    else None
)

app = sipr.App()
if NATIVE:
    served = [clamped.serve(app, auth=auth), registrar.serve(app, auth=auth)]
    assert served == [isinstance(store, NativeStore)] * 2, served


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        if auth is not None and not await auth.check(req):
            return
        r = clamped if req.to.uri.host.lower() == "clamp.test" else registrar
        return await r.save(req)
    aor = req.headers.get("X-AoR")
    if req.method == "OPTIONS" and req.uri.user == "lookup" and aor:
        found = [
            {
                "uri": c.uri,
                "q": c.q,
                "expires": c.expires,
                "received": c.received,
                "path": list(c.path),
                "next_hop": c.next_hop,
            }
            for c in await registrar.lookup(aor)
        ]
        return req.reply(
            200,
            headers=[("Content-Type", "application/json")],
            body=json.dumps(found).encode(),
        )
    if req.method == "OPTIONS" and req.uri.user == "stats":
        return req.reply(200, headers=[("X-Native", str(app.stats()["registrar.native"]))])
    if req.method == "OPTIONS" and req.uri.user == "remove" and aor:
        n = await registrar.remove(aor)
        return req.reply(200, headers=[("X-Removed", str(n))])
    req.reply(404)
