"""Registrar for the load harness (benches/load/run.sh modes `reg`, `reg_auth`).

REGISTER -> `sipr.Registrar("memory:").save()` (in-memory location store), the
equivalent of Kamailio's registrar.cfg (`save("location")`, usrloc db_mode 0).

SIPR_AUTH=1 (mode `reg_auth`): digest authentication first, MD5 only (SIPp
answers the first challenge), every user's password "secret" (a callable
credentials source: HA1 computed per request, like Kamailio's
pv_www_authenticate with a plain password). sipr's check: realm, stateless
HMAC nonce (age ≤ 300 s), qop=auth with cnonce, response, nc replay refusal
per nonce, auth username == To user.
"""

import os

import sipr

app = sipr.App()
registrar = sipr.Registrar("memory:")
AUTH = os.environ.get("SIPR_AUTH") == "1"
PASSWORD = os.environ.get("SIPR_BENCH_PASSWORD", "secret")
auth = sipr.DigestAuth("sipr", credentials=lambda user: PASSWORD, algorithms=("MD5",))


@app.route
async def route(req: sipr.Request) -> None:
    if req.method != "REGISTER":
        return req.reply(404)
    if AUTH and not await auth.check(req):
        return
    await registrar.save(req)
