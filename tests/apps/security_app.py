"""The app of the security acceptance tests (tests/sipp/test_security*.py),
configured by the JSON in SIPR_SECURITY:

    trusted, flood, auth, blocklist, sanity, method_limits   -> sipr.Security(...)
    target        next hop of INVITEs (the SIPp UAS)
    acl           address rules file (sipr.AddressGroups), "carriers" skip auth
    calls_per_s   per-From-user limit on INVITEs and MESSAGEs (sipr.limits), 503
                  beyond; MESSAGEs within it are answered 200; `sipr ctl test.takes`
                  lists each take as [monotonic seconds, taken]
    calls_burst   the bucket's size for calls_per_s (default: the rate)
    limits        the sipr.limits backend URL (default memory:)
    native_reg    REGISTERs answered by the core (Registrar.serve) instead of Python
    topology      store URL of topology hiding (sipr.TopologyHiding)

OPTIONS are answered 200; REGISTERs are authenticated (alice/bob, realm
sipr.test) and saved; INVITEs are limited, checked against the ACL or
authenticated as configured, then relayed to `target`.
"""

import json
import os
import time
from collections import deque

import sipr

CFG = json.loads(os.environ.get("SIPR_SECURITY", "{}"))


def _security() -> sipr.Security:
    kwargs = {k: CFG[k] for k in ("trusted", "sanity", "method_limits") if k in CFG}
    method_limits = kwargs.get("method_limits")
    if method_limits:
        kwargs["method_limits"] = {m: tuple(v) for m, v in method_limits.items()}
    if "flood" in CFG:
        kwargs["flood"] = sipr.FloodGuard(**CFG["flood"])
    if "auth" in CFG:
        kwargs["auth"] = sipr.AuthBans(**CFG["auth"])
    if "blocklist" in CFG:
        kwargs["blocklist"] = sipr.Blocklist(**CFG["blocklist"])
    if "acl" in CFG:
        kwargs["acl"] = sipr.AddressGroups(CFG["acl"])
    if "topology" in CFG:
        kwargs["topology"] = sipr.TopologyHiding(store=CFG["topology"])
    return sipr.Security(**kwargs)


app = sipr.App(security=_security(), timers={"t1": 0.1})
# MD5 offered first: SIPp answers the first challenge and knows only MD5.
auth = sipr.DigestAuth(
    "sipr.test", {"alice": "alice-secret", "bob": "bob-secret"}, algorithms=("MD5", "SHA-256")
)
registrar = sipr.Registrar()
if CFG.get("native_reg"):
    registrar.serve(app, auth=auth)
CALLS_PER_S = CFG.get("calls_per_s")
CALLS_BURST = CFG.get("calls_burst")
if "limits" in CFG:
    sipr.limits.use(CFG["limits"])


#: Each rate-limit take as the app saw it (bounded).
TAKES: deque[tuple[float, bool]] = deque(maxlen=10_000)


@app.rpc("test.takes")
async def takes() -> list[tuple[float, bool]]:
    return list(TAKES)


def carrier(req: sipr.Request) -> bool:
    """From a carrier's address, or (X-Real-IP) relayed for one by a trusted SBC."""
    if req.source_in("carriers"):
        return True
    real = req.headers.get("X-Real-IP")
    acl = app.security.acl
    return real is not None and acl is not None and acl.allows("carriers", real) is not None


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "OPTIONS":
        return req.reply(200)
    if req.method == "REGISTER":
        if await auth.check(req):
            await registrar.save(req)
        return
    if req.method not in ("INVITE", "MESSAGE"):
        return req.reply(405)
    if CALLS_PER_S is not None:
        user = req.from_.uri.user or ""
        taken = await sipr.limits.take(f"calls:{user}", CALLS_PER_S, 1.0, burst=CALLS_BURST)
        TAKES.append((time.monotonic(), bool(taken)))
        if not taken:
            return sipr.limits.reject(req, taken)
    if req.method == "MESSAGE":
        return req.reply(200)
    if "acl" in CFG and not (carrier(req) or await auth.check(req)):
        return
    await req.relay(CFG["target"])
