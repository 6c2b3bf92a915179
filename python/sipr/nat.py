"""`sipr.nat` (Kamailio `nathelper` natping): the core keeps the NAT
mappings of registered phones open.

    registrar = sipr.Registrar("memory:")
    registrar.serve(app)
    sipr.nat.keepalive(app, registrar, interval=20)

Every binding the registrar stored with a `received` address (the phone
is not where its Via says: behind NAT; and every stream binding) gets an
OPTIONS from the proxy's own UDP socket (or CRLF CRLF on its TCP/TLS
connection) every `interval` seconds, spread over the interval. The pings
are sent and their answers counted in the core: no Python runs per ping.
With `drop_after=N`, a binding whose last N pings went unanswered is
removed. Detection and fix-ups of a request (`req.behind_nat`,
`req.fix_nated_contact()`, `req.fix_nated_sdp()`) are request methods.
Operator page: docs/nat.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipr._core import Core

if TYPE_CHECKING:
    from sipr.app import App
    from sipr.registrar import Registrar


def keepalive(
    app: App,
    registrar: Registrar,
    *,
    interval: float = 20.0,
    drop_after: int = 0,
    from_uri: str | None = None,
) -> None:
    """Pings the NATed bindings of `registrar` (whose store must be one the
    core reads: `memory:` or `sqlite://`) every `interval` seconds from
    the server's start. One registrar per server."""
    if not interval > 0:
        raise ValueError("nat.keepalive: interval must be a positive number of seconds")
    if drop_after < 0:
        raise ValueError("nat.keepalive: drop_after must be >= 0 (0: never drop)")
    native = registrar._native_store()
    if native is None:
        raise ValueError(
            "nat.keepalive: the registrar's store is written in Python; "
            "keepalives need a memory: or sqlite:// store"
        )

    async def start() -> None:
        core = app._core
        assert isinstance(core, Core), "nat.keepalive: the app is not running"
        core.start_natping(native, interval, drop_after, from_uri)

    async def show() -> dict[str, Any]:
        """`sipr ctl nat.show`: the settings and every binding pinged."""
        core = app._core
        assert isinstance(core, Core), "nat.show: the app is not running"
        rows = [
            {"aor": aor, "contact": contact, "transport": transport,
             "address": f"{host}:{port}", "misses": misses}
            for aor, contact, transport, host, port, misses in core.natping_rows()
        ]  # fmt: skip
        return {"interval": interval, "drop_after": drop_after, "bindings": rows}

    app.on_startup(start)
    if "nat.show" not in app.rpc_methods:
        app.rpc("nat.show")(show)
