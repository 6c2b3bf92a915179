"""Topology hiding with stored state (Kamailio `topos`; docs/security.md,
decision 0035). With

    app = sipr.App(security=sipr.Security(
        topology=sipr.TopologyHiding(store="sqlite:///var/lib/sipr/topos.db")))

every dialog the app relays is cut in two sides that never see each
other's Via, Record-Route, Contact or Call-ID; in-dialog requests (re-INVITE,
BYE, ...) from either side are routed by the core through the record it
keeps of the dialog. The records are written to the store (SQLite by
default, or `redis://host:port/db`) a fraction of a second after they change
and read back at start, so dialogs survive a restart of sipr.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sipr.store import parse_store_url

log = logging.getLogger("sipr.security")

DEFAULT_STORE = "sqlite:///var/lib/sipr/topos.db"


@dataclass
class TopologyHiding:
    #: Where the dialog records are kept: `sqlite:///path.db`, `redis://host:port/db`
    #: or `memory:` (lost at restart).
    store: str = DEFAULT_STORE
    #: Hidden dialogs kept at most (memory bound, ~1 KB each).
    max_dialogs: int = 200_000
    #: Seconds a dialog is kept without in-dialog traffic (a longer call
    #: keeps routing as long as it sends re-INVITEs, UPDATEs or OPTIONS).
    dialog_ttl: float = 12 * 3600.0
    #: Seconds a dialog without a 2xx yet is kept.
    early_ttl: float = 300.0
    #: Seconds a dialog is kept after its BYE or failed INVITE.
    linger: float = 32.0


class DialogStore(Protocol):
    async def load(self) -> list[dict[str, Any]]: ...
    async def write(self, changes: list[tuple[str, dict[str, Any]]]) -> None: ...
    async def close(self) -> None: ...


class MemoryDialogStore:
    async def load(self) -> list[dict[str, Any]]:
        return []

    async def write(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        pass

    async def close(self) -> None:
        pass


class SqliteDialogStore:
    """One row per dialog; a batch of changes is one transaction."""

    SCHEMA = """CREATE TABLE IF NOT EXISTS topos_dialogs (
        id TEXT PRIMARY KEY, data TEXT NOT NULL, expires REAL NOT NULL)"""

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        if synchronous.lower() not in ("normal", "full", "off"):
            raise ValueError(f"synchronous must be normal, full or off, not {synchronous!r}")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(self.SCHEMA)

    async def load(self) -> list[dict[str, Any]]:
        self.db.execute("DELETE FROM topos_dialogs WHERE expires <= ?", (time.time(),))
        return [json.loads(r[0]) for r in self.db.execute("SELECT data FROM topos_dialogs")]

    async def write(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            for op, record in changes:
                if op == "delete":
                    db.execute("DELETE FROM topos_dialogs WHERE id = ?", (record["id"],))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO topos_dialogs (id, data, expires) VALUES (?,?,?)",
                        (record["id"], json.dumps(record), record["expires"]),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        self.db.close()


class RedisDialogStore:
    """One key per dialog, expiring with it (shared by several sipr)."""

    def __init__(self, url: str, prefix: str = "sipr:topos:") -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.from_url(url)
        self.prefix = prefix

    async def load(self) -> list[dict[str, Any]]:
        out = []
        async for key in self.r.scan_iter(match=f"{self.prefix}*", count=500):
            raw = await self.r.get(key)
            if raw:
                out.append(json.loads(raw))
        return out

    async def write(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        async with self.r.pipeline(transaction=False) as p:
            for op, record in changes:
                key = self.prefix + record["id"]
                if op == "delete":
                    p.delete(key)
                else:
                    ttl_ms = max(1, int((record["expires"] - now) * 1000))
                    p.set(key, json.dumps(record), px=ttl_ms)
            await p.execute()

    async def close(self) -> None:
        await self.r.aclose()


def open_dialog_store(url: str) -> DialogStore:
    kind, target, sync = parse_store_url(url, "topology store")
    if kind == "sqlite":
        return SqliteDialogStore(target, sync)
    if kind == "redis":
        return RedisDialogStore(target)
    return MemoryDialogStore()


class TopologyRuntime:
    """Turns hiding on in the core, loads the stored dialogs, and writes
    the core's record changes to the store (`flush`, from the security
    housekeeping, and at shutdown)."""

    def __init__(self, config: TopologyHiding, native: Any) -> None:
        self.config = config
        self.native = native
        self.store = open_dialog_store(config.store)
        self.written = 0

    async def start(self) -> None:
        records = await self.store.load()
        loaded = self.native.topology_load(records)
        c = self.config
        self.native.topology_enable(
            max_dialogs=int(c.max_dialogs),
            dialog_ttl=float(c.dialog_ttl),
            early_ttl=float(c.early_ttl),
            linger=float(c.linger),
        )
        log.info("topology hiding on (store %s): %d dialog(s) restored", c.store, loaded)

    async def flush(self) -> int:
        """Stores the core's new topology records; how many."""
        changes = self.native.topology_changes()
        if changes:
            await self.store.write(changes)
            self.written += len(changes)
        return len(changes)

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self.store.close()

    def describe(self) -> dict[str, Any]:
        return {"store": self.config.store, "written": self.written}
