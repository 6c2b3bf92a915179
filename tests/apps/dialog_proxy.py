"""Stateful proxy that tracks dialogs and writes accounting, for the issue-18
tests (tests/sipp/test_dialogs.py, test_accounting_pg.py).

    SIPR_TARGET         next hop of initial requests (a SIPp UAS), unless the
                        request names one in X-Target
    SIPR_ACC            accounting URL (sipr.Accounting's default reads it)
    SIPR_DLG_TIMEOUT    dialog lifetime once answered, seconds
    SIPR_DLG_KEEPALIVE  in-dialog OPTIONS interval, seconds
    SIPR_LIMIT          concurrent calls allowed per caller (486 beyond)
    SIPR_T1             RFC 3261 T1 in seconds (short timers in tests)
    SIPR_MAX_DIALOGS    bound of the dialog table (503 when full)

Every INVITE is tracked in profile ("user", <From user>) and accounted with
the requests of its dialog (ACK, BYE ... routed in Rust).
"""

import os

import sipr

TARGET = os.environ.get("SIPR_TARGET")
TIMEOUT = float(os.environ["SIPR_DLG_TIMEOUT"]) if os.environ.get("SIPR_DLG_TIMEOUT") else None
KEEPALIVE = (
    float(os.environ["SIPR_DLG_KEEPALIVE"]) if os.environ.get("SIPR_DLG_KEEPALIVE") else None
)
LIMIT = int(os.environ["SIPR_LIMIT"]) if os.environ.get("SIPR_LIMIT") else None
TIMERS = {"t1": float(os.environ["SIPR_T1"])} if os.environ.get("SIPR_T1") else None

app = sipr.App(timers=TIMERS)
if os.environ.get("SIPR_MAX_DIALOGS"):
    app.dialogs.max_dialogs = int(os.environ["SIPR_MAX_DIALOGS"])
sipr.Accounting(batch_size=200, retry_max=1.0).serve(app)


@app.route
async def route(req: sipr.Request) -> None:
    if req.method == "INVITE":
        user = req.from_.uri.user or ""
        if LIMIT is not None and app.dialogs.count("user", user) >= LIMIT:
            return req.reply(486, "Busy Here")
        try:
            req.track_dialog(
                profiles=[("user", user)],
                timeout=TIMEOUT,
                keepalive=KEEPALIVE,
                cdr={"customer": "acme", "user": user},
            )
        except sipr.DialogError:
            return req.reply(503, "Too Many Calls")
        req.account(extra={"route": "outbound"})
    # X-Target: a test's per-call next hop (a busy or ringing SIPp UAS), or a
    # comma list of them: a parallel fork.
    target = req.headers.get("X-Target") or TARGET
    await req.relay(target.split(",") if target and "," in target else target)
