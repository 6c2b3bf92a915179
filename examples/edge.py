"""An edge proxy on a public address (docs/security.md): flood and
authentication bans, scanners banned, sanity checks, a per-user call rate,
carriers admitted by address, and the core network's topology hidden.

    sipr run examples/edge.py --listen udp:0.0.0.0:5060
    SIPR_CARRIERS=/etc/sipr/address.txt SIPR_CORE=sip:10.0.0.10:5060 sipr run examples/edge.py

Carriers (group "carriers" of the address rules) reach the core without a
password; everyone else authenticates (users in SIPR_USERS="alice:pw,bob:pw")
and may start at most 5 calls a second. Calls go to SIPR_CORE with topology
hiding: the core and the callers never see each other's addresses; the
dialogs are kept in SIPR_TOPOS (SQLite) so calls survive a restart.
"""

import os

import sipr

CORE = os.environ.get("SIPR_CORE", "sip:127.0.0.1:5070")
USERS = dict(
    u.strip().split(":", 1) for u in os.environ.get("SIPR_USERS", "").split(",") if ":" in u
)
CARRIERS = os.environ.get("SIPR_CARRIERS")

app = sipr.App(
    security=sipr.Security(
        trusted=[
            "127.0.0.0/8",
            "::1",
            *filter(None, os.environ.get("SIPR_TRUSTED", "").split(",")),
        ],
        flood=sipr.FloodGuard(limit=200, window=1.0, ban=600),
        auth=sipr.AuthBans(source_failures=5, source_ban=3600),
        sanity=True,
        method_limits={"INVITE": 200, "REGISTER": 500},
        acl=sipr.AddressGroups(CARRIERS) if CARRIERS else None,
        topology=sipr.TopologyHiding(
            store=os.environ.get("SIPR_TOPOS", "sqlite:///var/lib/sipr/topos.db")
        ),
    )
)
auth = sipr.DigestAuth("edge", USERS)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS":
        return req.reply(200)
    if req.method not in ("INVITE", "MESSAGE", "SUBSCRIBE"):
        return req.reply(405)
    if not req.source_in("carriers"):
        if not await auth.check(req):
            return
        taken = await sipr.limits.take(f"calls:{req.from_.uri.user}", rate=5, per=1.0)
        if not taken:
            return sipr.limits.reject(req, taken)
    await req.relay(CORE)
