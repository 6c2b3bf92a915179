"""Control methods of the security services: bans (`ban.*`), locked users
(`auth.*`), address groups (`permissions.*`, Kamailio's names), rate limits
(`limits.*`), topology hiding (`topos.*`) and the settings in force."""

from __future__ import annotations

from typing import Any

from sipr import limits
from sipr._protocols import RpcMethod, ServerView
from sipr.control.rpc import APP_ERROR, Registry, RpcError
from sipr.security import ban_rows

#: `ban.add` without SECONDS.
DEFAULT_MANUAL_BAN = 3600.0


def register_security(registry: Registry, server: ServerView) -> None:

    def native() -> Any:
        if server.core is None:
            raise RpcError(APP_ERROR, "the core is not running")
        return server.core.security()

    def runtime() -> Any:
        rt = getattr(server, "security", None)
        if rt is None:
            raise RpcError(APP_ERROR, "the security services are not running")
        return rt

    async def ban_list() -> list[dict[str, Any]]:
        """Banned sources: reason, seconds left, packets dropped since."""
        return ban_rows(native())

    async def ban_add(source: str, seconds: float = DEFAULT_MANUAL_BAN) -> dict[str, Any]:
        """Bans SOURCE (an address, or an IPv6 /64) for SECONDS (default 3600)."""
        new = native().ban_add(str(source), float(seconds), "sipr ctl ban.add")
        return {"source": source, "seconds": float(seconds), "new": new}

    async def ban_remove(source: str) -> dict[str, Any]:
        """Lifts the ban of SOURCE."""
        if not native().ban_remove(str(source)):
            raise RpcError(APP_ERROR, f"not banned: {source}")
        return {"source": source, "removed": True}

    async def auth_locks() -> list[dict[str, Any]]:
        """Users locked by failed authentications, with seconds left."""
        return [{"user": u, "expires_in": round(s, 1)} for u, s in native().user_locks()]

    async def auth_unlock(user: str) -> dict[str, Any]:
        """Unlocks USER (user@realm) at once; `unlocked` says whether it was locked."""
        return {"user": user, "unlocked": native().unlock_user(str(user))}

    async def permissions_reload() -> dict[str, Any]:
        """Reads the address rules again (file or store); a bad file is refused."""
        acl = runtime().acl
        if acl is None:
            return {"source": None, "rules": 0}  # no Security(acl=...): nothing to read
        n = await acl.reload(native())
        return {"source": acl.source or "(code)", "rules": n}

    async def permissions_dump() -> list[dict[str, Any]]:
        """The address rules in force: group, network, port, transport, tag."""
        keys = ("group", "network", "port", "transport", "tag")
        return [dict(zip(keys, r, strict=True)) for r in native().acl_rules()]

    async def permissions_check(
        group: str, address: str, port: int = 5060, transport: str = "udp"
    ) -> dict[str, Any]:
        """Whether ADDRESS [PORT] [TRANSPORT] belongs to GROUP (allow_address)."""
        tag = native().allow_address(str(group), str(address), int(port), str(transport))
        return {"group": group, "allowed": tag is not None, "tag": tag}

    async def limits_list() -> list[dict[str, Any]]:
        """Per-method limits of the core and the route's buckets in use (memory)."""
        rows = [
            {"limit": f"method {m}", "rate_per_s": r, "burst": b, "tokens": round(t, 2)}
            for m, r, b, t in native().method_limits()
        ]
        rows += [
            {"limit": key, "rate_per_s": r, "burst": b, "tokens": round(t, 2)}
            for key, t, r, b in limits.limiter().snapshot()
        ]
        return rows

    async def limits_set_method(
        method: str, rate: float | None, per: float = 1.0, burst: float | None = None
    ) -> dict[str, Any]:
        """Limits METHOD to RATE per PER seconds (null RATE: no limit)."""
        native().set_method_limit(str(method), rate, float(per), burst)
        return {"method": method, "rate": rate, "per": per, "burst": burst}

    async def security_show() -> dict[str, Any]:
        """The security settings in force."""
        n = native()
        enabled, limit, window, ban = n.flood_settings()
        app_security = server.app.security
        topology = runtime().topology
        return {
            "trusted": n.trusted(),
            "flood": {"enabled": enabled, "limit": limit, "window": window, "ban": ban},
            "auth": vars(app_security.auth),
            "blocklist_action": app_security.blocklist.action,
            "sanity": app_security.sanity_checks(),
            "method_limits": {m: r for m, r, _, _ in n.method_limits()},
            "acl_rules": len(n.acl_rules()),
            "topology_hiding": topology.describe() if topology is not None else None,
        }

    async def topos_list(limit: int = 100) -> list[dict[str, Any]]:
        """Hidden dialogs (topology hiding): id, both Call-IDs, age, expiry."""
        return [dict(r) for r in native().topology_list(int(limit))]

    methods: dict[str, RpcMethod] = {
        "ban.list": ban_list,
        "ban.add": ban_add,
        "ban.remove": ban_remove,
        "auth.locks": auth_locks,
        "auth.unlock": auth_unlock,
        "permissions.reload": permissions_reload,
        "permissions.addressReload": permissions_reload,
        "permissions.dump": permissions_dump,
        "permissions.addressDump": permissions_dump,
        "permissions.check": permissions_check,
        "limits.list": limits_list,
        "limits.set_method": limits_set_method,
        "security.show": security_show,
        "topos.list": topos_list,
    }
    for name, fn in methods.items():
        registry.add(name, fn)
