"""The built-in control methods, named after Kamailio's RPC commands."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipr._core import Core, __version__
from sipr._protocols import RpcMethod, ServerView, Settings
from sipr.control import stats
from sipr.control.rpc import APP_ERROR, Registry, RpcError
from sipr.control.security_commands import register_security
from sipr.loader import ReloadError
from sipr.registrar import aor_of
from sipr.store import Binding

#: Stream transports that carry TLS (their listeners are what `tls.list` shows).
TLS_TRANSPORTS = ("tls", "wss")


def register_builtins(registry: Registry, server: ServerView, started: float) -> None:
    """Adds the built-in methods for `server`, running since `started`
    (`time.monotonic()`)."""

    def core() -> Core:
        if server.core is None:
            raise RpcError(APP_ERROR, "the core is not running")
        return server.core

    def runtime_config() -> Settings:
        return server.config

    async def list_methods() -> list[str]:
        """The methods this server answers."""
        return sorted(registry.methods)

    async def method_help(name: str) -> dict[str, str]:
        """Usage and description of one method."""
        if name not in registry.methods:
            raise RpcError(APP_ERROR, f"no such method: {name}")
        return {
            "name": name,
            "usage": f"{name} {registry.signature(name)}".strip(),
            "help": registry.describe(name),
        }

    async def version() -> dict[str, str]:
        """sipr, Python and platform versions."""
        return {
            "version": __version__,
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
        }

    async def uptime() -> dict[str, Any]:
        """When the server started and how long it has run (seconds)."""
        up = time.monotonic() - started
        since = datetime.fromtimestamp(time.time() - up, UTC)
        return {
            "now": datetime.now(UTC).isoformat(timespec="seconds"),
            "up_since": since.isoformat(timespec="seconds"),
            "uptime": round(up, 3),
        }

    async def ps() -> list[dict[str, Any]]:
        """The process's threads: the serving loop, the stream thread, helpers."""
        pid = os.getpid()
        rows = []
        tasks = Path("/proc/self/task")
        for tid in sorted(tasks.iterdir(), key=lambda p: int(p.name)) if tasks.is_dir() else []:
            try:
                name = (tid / "comm").read_text().strip()
            except OSError:
                continue  # the thread ended while listing
            role = "serving loop" if int(tid.name) == pid else ""
            rows.append({"pid": pid, "tid": int(tid.name), "name": name, "role": role})
        return rows

    async def tcp_info() -> dict[str, Any]:
        """Listeners per transport and open stream connections."""
        listeners: dict[str, list[str]] = {}
        for transport, host, port in core().local_addrs():
            shown = f"[{host}]" if ":" in host else host
            listeners.setdefault(transport, []).append(f"{shown}:{port}")
        counts = dict(core().stats())
        return {
            "listeners": listeners,
            "opened_connections": counts.get("connections", 0),
            "connections_by_transport": {
                key.split(".", 1)[1]: n
                for key, n in counts.items()
                if key.startswith("connections.")
            },
            "ingress_queue": counts.get("ingress_queue", 0),
        }

    async def tm_stats() -> dict[str, int]:
        """Transactions: current and total, server and client, replies by class."""
        s = dict(core().stats())
        server_now, client_now = s["transactions.server"], s["transactions.client"]
        out = {
            "current": server_now + client_now,
            "total": s["transactions.server_total"] + s["transactions.client_total"],
            "server_current": server_now,
            "server_total": s["transactions.server_total"],
            "client_current": client_now,
            "client_total": s["transactions.client_total"],
            "suspended_handlers": server.suspended,
            "rpl_received": s["responses_in"],
            "rpl_sent": s["responses_out"],
        }
        for c in range(1, 7):
            out[f"{c}xx"] = s[f"responses_out.{c}xx"]
        return out

    def binding_row(b: Binding, now: float) -> dict[str, Any]:
        return {
            "contact": b.contact,
            "expires": b.remaining(now),
            "q": b.q,
            "received": b.received,
            "path": list(b.path),
            "user_agent": b.user_agent,
            "call_id": b.call_id,
            "cseq": b.cseq,
        }

    def no_registrar() -> RpcError:
        return RpcError(APP_ERROR, "the app has no sipr.Registrar")

    async def ul_dump() -> list[dict[str, Any]]:
        """Every AoR with its live contacts (all registrars' stores)."""
        if not stats.registrars():
            raise no_registrar()
        now = time.time()
        out = []
        for store in stats.stores():
            for aor in sorted(await store.aors()):
                contacts = [binding_row(b, now) for b in await store.bindings(aor)]
                if contacts:
                    out.append({"aor": aor, "contacts": contacts})
        return out

    def key_of(aor: str) -> str:
        if not isinstance(aor, str) or not aor:
            raise RpcError(APP_ERROR, "AOR must be a SIP URI or user@host")
        try:
            return aor_of(aor if ":" in aor.split("@")[0] else f"sip:{aor}")
        except ValueError as e:
            raise RpcError(APP_ERROR, f"bad AOR {aor!r}: {e}") from e

    async def ul_lookup(aor: str) -> dict[str, Any]:
        """The live contacts of one AoR."""
        if not stats.registrars():
            raise no_registrar()
        key, now = key_of(aor), time.time()
        contacts = [
            binding_row(b, now) for store in stats.stores() for b in await store.bindings(key)
        ]
        if not contacts:
            raise RpcError(APP_ERROR, f"AOR not found: {key}")
        return {"aor": key, "contacts": contacts}

    async def ul_rm(aor: str, contact: str | None = None) -> dict[str, Any]:
        """Removes an AoR's bindings, or only CONTACT."""
        if not stats.registrars():
            raise no_registrar()
        key, removed = key_of(aor), 0
        for store in stats.stores():
            if contact is None:
                removed += await store.remove(key)
            elif any(b.contact == contact for b in await store.bindings(key)):
                await store.update(key, [], [contact])
                removed += 1
        stats.forget_registration_counts()
        if not removed:
            what = f"contact {contact} of {key}" if contact else f"AOR {key}"
            raise RpcError(APP_ERROR, f"not found: {what}")
        return {"aor": key, "removed": removed}

    async def stats_get(prefix: str = "") -> dict[str, float]:
        """Statistics as group.name → value, optionally only those starting with PREFIX."""
        got = await stats.collect(server, started)
        return {k: v for k, v in sorted(got.items()) if k.startswith(prefix)}

    async def stats_reset() -> dict[str, bool]:
        """Zeroes the counters (gauges such as open transactions stay)."""
        core().reset_stats()
        server.deadline_expired = 0
        if server.watchdog is not None:
            server.watchdog.stalls = 0
        return {"reset": True}

    async def cfg_list() -> list[dict[str, Any]]:
        """Runtime settings: name, value, type, description."""
        return list(runtime_config().list())

    async def cfg_get(name: str) -> Any:
        """The value of one runtime setting."""
        return runtime_config().get(name)

    async def cfg_set(name: str, value: Any) -> dict[str, Any]:
        """Changes a runtime setting; takes effect without restart."""
        config = runtime_config()
        config.set(name, value)
        return {"name": name, "value": config.get(name)}

    async def dns_view() -> list[dict[str, Any]]:
        """The resolver cache: host, port, address, seconds left."""
        rows = [
            {"host": h, "port": p, "address": a, "ttl": ttl} for h, p, a, ttl in core().dns_cache()
        ]
        return sorted(rows, key=lambda r: (r["host"], r["port"]))

    async def dns_cache(host: str | None = None) -> list[dict[str, Any]]:
        """RFC 3263 resolutions cached: name, transport, servers, addresses, TTL left."""
        rows = []
        for e in core().dns().entries():
            if host is not None and e["host"] != host.lower():
                continue
            servers = e["servers"] or [{}]
            for s in servers:
                rows.append(
                    {
                        "host": e["host"],
                        "port": e["port"] if e["port"] is not None else "",
                        "transport": s.get("transport", e["transport"] or ""),
                        "target": s.get("name", ""),
                        "priority": s.get("priority", ""),
                        "weight": s.get("weight", ""),
                        "target_port": s.get("port", ""),
                        "addresses": ", ".join(s.get("addresses", [])),
                        "via": s.get("via", ""),
                        "ttl": e["ttl"],
                        "error": e["error"] or "",
                    }
                )
        return sorted(rows, key=lambda r: (r["host"], str(r["port"])))

    async def dns_flush(host: str | None = None) -> dict[str, int]:
        """Drops cached resolutions (all, or those of HOST)."""
        return {"flushed": core().dns().flush(host)}

    async def dst_blocklist() -> list[dict[str, Any]]:
        """Destinations that timed out or were unreachable, tried last until they expire."""
        return [
            {"transport": t, "address": a, "expires_in": left, "reason": reason, "hits": hits}
            for t, a, left, reason, hits in sorted(core().dns().blocklist())
        ]

    async def dst_blocklist_remove(address: str | None = None) -> dict[str, int]:
        """Removes blocklist entries: all, or those of ADDRESS (IP:PORT)."""
        return {"removed": core().dns().unblock(address)}

    async def tls_list() -> list[dict[str, Any]]:
        """The loaded TLS certificates (default and per-SNI domain), each with
        its expiry and the TLS listeners serving it; [] without TLS."""
        c = core()
        listeners = ", ".join(f"{t}:{h}:{p}" for t, h, p in c.local_addrs() if t in TLS_TRANSPORTS)
        return [
            {
                "domain": cert["domain"] or "*",
                "subject": cert["subject"],
                "not_after": cert["not_after"],
                "names": ", ".join(cert["names"]),
                "path": cert["path"],
                "listeners": listeners,
            }
            for cert in c.tls_info()["certificates"]
        ]

    async def app_reload() -> dict[str, Any]:
        """Re-imports the route script; a script that fails to import is refused."""
        try:
            result = await server.reload()
        except ReloadError as e:
            raise RpcError(APP_ERROR, f"reload refused, the running app stays: {e}") from e
        return {"reloaded": True, **result}

    methods: dict[str, RpcMethod] = {
        "system.listMethods": list_methods,
        "system.methodHelp": method_help,
        "core.version": version,
        "core.uptime": uptime,
        "core.ps": ps,
        "core.tcp_info": tcp_info,
        "tm.stats": tm_stats,
        "ul.dump": ul_dump,
        "ul.lookup": ul_lookup,
        "ul.rm": ul_rm,
        "stats.get": stats_get,
        "stats.reset": stats_reset,
        "cfg.list": cfg_list,
        "cfg.get": cfg_get,
        "cfg.set": cfg_set,
        "dns.view": dns_view,
        "dns.cache": dns_cache,
        "dns.flush": dns_flush,
        "dst.blocklist": dst_blocklist,
        "dst.blocklist_remove": dst_blocklist_remove,
        "tls.list": tls_list,
        "app.reload": app_reload,
    }
    for name, fn in methods.items():
        registry.add(name, fn)
    register_security(registry, server)
