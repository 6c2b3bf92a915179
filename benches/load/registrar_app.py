"""Registrar for the load harness (benches/load/run.sh modes `reg`, `reg_auth`).

REGISTER -> `sipr.Registrar("memory:")`, the equivalent of Kamailio's
registrar.cfg (`save("location")`, usrloc db_mode 0), served natively by the
core (`registrar.serve(app, auth=...)`: no Python per REGISTER). With
SIPR_REG_PYTHON=1 every REGISTER goes through the Python route below instead
(`auth.check` + `registrar.save`), the path measured before the native one.

SIPR_AUTH=1 (mode `reg_auth`): digest authentication first, MD5 only (SIPp
answers the first challenge), users user1..user200000 (run.sh's users.csv)
with password "secret" in a dict. sipr's check: realm, stateless HMAC nonce
(age ≤ 300 s), qop=auth with cnonce, response, nc replay refusal per nonce,
auth username == To user.
"""

import os

import sipr

app = sipr.App()
registrar = sipr.Registrar("memory:")
AUTH = os.environ.get("SIPR_AUTH") == "1"
PASSWORD = os.environ.get("SIPR_BENCH_PASSWORD", "secret")
USERS = {f"user{i}": PASSWORD for i in range(1, 200_001)} if AUTH else {}
auth = sipr.DigestAuth("sipr", credentials=USERS, algorithms=("MD5",))
if os.environ.get("SIPR_REG_PYTHON") != "1":
    registrar.serve(app, auth=auth if AUTH else None)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method != "REGISTER":
        return req.reply(404)
    if AUTH and not await auth.check(req):
        return
    await registrar.save(req)
