"""A small PBX: registrar + digest auth + calls to registered phones.

    sipr user add alice --password secret     # once: HA1s into the default store
    sipr run examples/pbx.py                  # udp+tcp 127.0.0.1:5060

Phones register as alice@<any domain> with realm "sipr" (SIPR_REALM); calls
to a registered user ring their contacts, best q first (equal q in
parallel). The store is SQLite in ~/.local/share/sipr/ unless SIPR_STORE names
another (memory:, sqlite:///path.db, redis://host:port/db).
SIPR_AUTH_CALLS=0 lets unauthenticated callers place calls (tests, labs).
SIPR_USERS="alice:secret,bob:pw" keeps the users in memory instead of the
store's. REGISTERs are answered in the core without entering Python
(`registrar.serve`, docs/decisions/0013, 0028) on the memory: and SQLite
stores; SIPR_NATIVE=0 sends every REGISTER through the route below instead.
"""

import os

import sipr
from sipr.paths import default_realm, default_store_url

registrar = sipr.Registrar(
    default_store_url(), min_expires=int(os.environ.get("SIPR_MIN_EXPIRES", "60"))
)
# MD5 by default: phones that see a SHA-256 challenge in the 401 often give up
# (docs/routing.md#digest-algorithms). "SHA-256,MD5" offers both, strongest first.
ALGORITHMS = tuple(a.strip() for a in os.environ.get("SIPR_DIGEST_ALGORITHMS", "MD5").split(","))
USERS = dict(
    u.strip().split(":", 1) for u in os.environ.get("SIPR_USERS", "").split(",") if ":" in u
)
auth = sipr.DigestAuth(default_realm(), credentials=USERS or registrar.store, algorithms=ALGORITHMS)
AUTH_CALLS = os.environ.get("SIPR_AUTH_CALLS", "1") != "0"

# An edge proxy faces phones behind NAT that do not ask for rport: answer
# them at the address and port they sent from (RFC 3581 §4).
app = sipr.App(force_rport=True)
# Native REGISTER handling when the store and credentials allow it (memory: or
# SQLite store; users in a dict or that store); otherwise a no-op and the
# route below does it all.
if os.environ.get("SIPR_NATIVE", "1") != "0":
    registrar.serve(app, auth=auth)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "REGISTER":
        if await auth.check(req):
            await registrar.save(req)
        return
    if req.method == "OPTIONS" and req.uri.user is None:
        return req.reply(200)
    if AUTH_CALLS and req.method in ("INVITE", "MESSAGE", "SUBSCRIBE"):
        if not await auth.check(req):
            return
    contacts = await registrar.lookup(req.uri)
    if not contacts:
        return req.reply(480 if req.method == "INVITE" else 404)
    for group in sipr.by_q(contacts):
        resp = await req.relay(group, timeout=30)
        if resp is None or resp.status < 300 or resp.status >= 600 or resp.status in (486, 487):
            return  # answered, refused everywhere, busy, or cancelled by the caller


@app.in_dialog
async def in_dialog(req: sipr.Request) -> None:
    # In-dialog requests normally follow our Record-Route (routed in Rust);
    # these arrived without it: route them by Request-URI.
    await req.relay()
