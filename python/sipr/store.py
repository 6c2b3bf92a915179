"""Location and credential stores behind one interface: `memory:` (default),
`sqlite:///path/location.db` (embedded, persistent) and `redis://host:port/db`
(shared by several sipr instances).

Writes are applied before `save()` returns, so before the registrar's 200 goes
out. SQLite runs in WAL mode with `synchronous=NORMAL`: a committed binding
survives a crash of sipr, not necessarily a power cut of the machine (use
`sqlite:///path?synchronous=full` for that, at one fsync per REGISTER).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit


@dataclass
class Binding:
    """One registered contact of an address-of-record."""

    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    received: str | None = None
    path: list[str] = field(default_factory=list)
    user_agent: str | None = None
    instance: str | None = None

    def remaining(self, now: float | None = None) -> int:
        return max(0, int(self.expires_at - (now if now is not None else time.time()) + 0.5))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> Binding:
        return Binding(**json.loads(text))


def _binding(row: tuple[Any, ...]) -> Binding:
    c, exp, q, call_id, cseq, received, path, ua, instance = row
    return Binding(c, exp, q, call_id, cseq, received, path, ua, instance)


def _row(b: Binding) -> tuple[Any, ...]:
    return (
        b.contact, float(b.expires_at), float(b.q), b.call_id, int(b.cseq),
        b.received, list(b.path), b.user_agent, b.instance,
    )  # fmt: skip


class MissingExtra(ImportError):
    """A store needs an optional dependency that is not installed; the
    message names the extra to install (`sipr[redis]`)."""


class Store(Protocol):
    async def bindings(self, aor: str) -> list[Binding]: ...
    async def update(self, aor: str, upsert: list[Binding], delete: list[str]) -> None: ...
    async def remove(self, aor: str) -> int: ...
    async def aors(self) -> list[str]: ...
    async def get_user(self, realm: str, user: str) -> dict[str, str] | None: ...
    async def set_user(self, realm: str, user: str, ha1: dict[str, str]) -> None: ...
    async def remove_user(self, realm: str, user: str) -> bool: ...
    async def users(self, realm: str | None = None) -> list[tuple[str, str]]: ...
    async def close(self) -> None: ...


def _live(bindings: list[Binding]) -> list[Binding]:
    now = time.time()
    return [b for b in bindings if b.expires_at > now]


class MemoryStore:
    """Process-local: fast, gone at exit. The location table is native
    (`sipr._core.Location`), shared with the core when a registrar on this
    store is served there (`Registrar.serve`)."""

    def __init__(self) -> None:
        from sipr._core import Location

        self.location = Location()
        self._users: dict[tuple[str, str], dict[str, str]] = {}

    async def bindings(self, aor: str) -> list[Binding]:
        return [_binding(t) for t in self.location.bindings(aor, time.time())]

    async def update(self, aor: str, upsert: list[Binding], delete: list[str]) -> None:
        self.location.update(aor, [_row(b) for b in upsert], list(delete))

    async def remove(self, aor: str) -> int:
        return self.location.remove(aor)

    async def aors(self) -> list[str]:
        return self.location.aors(time.time())

    async def get_user(self, realm: str, user: str) -> dict[str, str] | None:
        return self._users.get((realm, user))

    async def set_user(self, realm: str, user: str, ha1: dict[str, str]) -> None:
        self._users[(realm, user)] = dict(ha1)

    async def remove_user(self, realm: str, user: str) -> bool:
        return self._users.pop((realm, user), None) is not None

    async def users(self, realm: str | None = None) -> list[tuple[str, str]]:
        return sorted(k for k in self._users if realm is None or k[0] == realm)

    async def close(self) -> None:
        pass


class SqliteStore:
    """Embedded and persistent. Calls run on the event loop's thread: each
    is a local B-tree update of tens of microseconds, cheaper than a thread
    hand-off."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS location (
        aor TEXT NOT NULL, contact TEXT NOT NULL, data TEXT NOT NULL,
        expires_at REAL NOT NULL, PRIMARY KEY (aor, contact));
    CREATE INDEX IF NOT EXISTS location_expiry ON location (expires_at);
    CREATE TABLE IF NOT EXISTS users (
        realm TEXT NOT NULL, username TEXT NOT NULL, ha1 TEXT NOT NULL,
        PRIMARY KEY (realm, username));
    """

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        if synchronous.lower() not in ("normal", "full", "off"):
            raise ValueError(f"synchronous must be normal, full or off, not {synchronous!r}")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(self.SCHEMA)
        self._purged = 0.0

    def _purge(self) -> None:
        now = time.time()
        if now - self._purged > 60:
            self._purged = now
            self.db.execute("DELETE FROM location WHERE expires_at <= ?", (now,))

    async def bindings(self, aor: str) -> list[Binding]:
        rows = self.db.execute(
            "SELECT data FROM location WHERE aor = ? AND expires_at > ?", (aor, time.time())
        ).fetchall()
        return [Binding.from_json(r[0]) for r in rows]

    async def update(self, aor: str, upsert: list[Binding], delete: list[str]) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "DELETE FROM location WHERE aor = ? AND contact = ?", [(aor, c) for c in delete]
            )
            db.executemany(
                "INSERT OR REPLACE INTO location (aor, contact, data, expires_at) VALUES (?,?,?,?)",
                [(aor, b.contact, b.to_json(), b.expires_at) for b in upsert],
            )
            self._purge()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def remove(self, aor: str) -> int:
        return self.db.execute("DELETE FROM location WHERE aor = ?", (aor,)).rowcount

    async def aors(self) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT aor FROM location WHERE expires_at > ? ORDER BY aor", (time.time(),)
        )
        return [r[0] for r in rows]

    async def get_user(self, realm: str, user: str) -> dict[str, str] | None:
        row = self.db.execute(
            "SELECT ha1 FROM users WHERE realm = ? AND username = ?", (realm, user)
        ).fetchone()
        return json.loads(row[0]) if row else None

    async def set_user(self, realm: str, user: str, ha1: dict[str, str]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO users (realm, username, ha1) VALUES (?,?,?)",
            (realm, user, json.dumps(ha1)),
        )

    async def remove_user(self, realm: str, user: str) -> bool:
        cur = self.db.execute("DELETE FROM users WHERE realm = ? AND username = ?", (realm, user))
        return cur.rowcount > 0

    async def users(self, realm: str | None = None) -> list[tuple[str, str]]:
        if realm is None:
            rows = self.db.execute("SELECT realm, username FROM users ORDER BY realm, username")
        else:
            rows = self.db.execute(
                "SELECT realm, username FROM users WHERE realm = ? ORDER BY username", (realm,)
            )
        return [(r[0], r[1]) for r in rows]

    async def close(self) -> None:
        self.db.close()


class RedisStore:
    """Shared by several sipr instances: each AoR is a hash of contact ->
    binding, expiring with its last binding."""

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise MissingExtra(
                "redis:// stores need the redis client: pip install 'sipr[redis]'"
            ) from None
        self.r = aioredis.from_url(url)
        self.prefix = "sipr:"

    def _loc(self, aor: str) -> str:
        return f"{self.prefix}loc:{aor}"

    async def bindings(self, aor: str) -> list[Binding]:
        raw = await self.r.hgetall(self._loc(aor))
        return _live([Binding.from_json(v) for v in raw.values()])

    async def update(self, aor: str, upsert: list[Binding], delete: list[str]) -> None:
        key = self._loc(aor)
        async with self.r.pipeline(transaction=True) as p:
            if delete:
                p.hdel(key, *delete)
            if upsert:
                p.hset(key, mapping={b.contact: b.to_json() for b in upsert})
            await p.execute()
        live = await self.bindings(aor)
        if live:
            await self.r.pexpireat(key, int(max(b.expires_at for b in live) * 1000) + 1000)
        else:
            await self.r.delete(key)

    async def remove(self, aor: str) -> int:
        key = self._loc(aor)
        n = await self.r.hlen(key)
        await self.r.delete(key)
        return int(n)

    async def aors(self) -> list[str]:
        out = []
        async for key in self.r.scan_iter(match=f"{self.prefix}loc:*", count=500):
            aor = key.decode()[len(self.prefix) + 4 :]
            if await self.bindings(aor):
                out.append(aor)
        return sorted(out)

    async def get_user(self, realm: str, user: str) -> dict[str, str] | None:
        raw = await self.r.get(f"{self.prefix}user:{realm}:{user}")
        return json.loads(raw) if raw else None

    async def set_user(self, realm: str, user: str, ha1: dict[str, str]) -> None:
        await self.r.set(f"{self.prefix}user:{realm}:{user}", json.dumps(ha1))

    async def remove_user(self, realm: str, user: str) -> bool:
        return bool(await self.r.delete(f"{self.prefix}user:{realm}:{user}"))

    async def users(self, realm: str | None = None) -> list[tuple[str, str]]:
        out = []
        pattern = f"{self.prefix}user:{realm or '*'}:*"
        async for key in self.r.scan_iter(match=pattern, count=500):
            _, _, rest = key.decode().partition("user:")
            r, _, u = rest.partition(":")
            out.append((r, u))
        return sorted(out)

    async def close(self) -> None:
        await self.r.aclose()


def open_store(url: str) -> Store:
    """`memory:`, `sqlite:///abs/path.db` (`sqlite://rel/path.db`), `redis://host:port/db`."""
    if url in ("memory:", "memory://", "memory"):
        return MemoryStore()
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError(f"store URL {url!r} names no database file")
        sync = parse_qs(parts.query).get("synchronous", ["normal"])[0]
        return SqliteStore(path, sync)
    if parts.scheme in ("redis", "rediss"):
        return RedisStore(url)
    raise ValueError(
        f"unknown store URL {url!r}: use memory:, sqlite:///path.db or redis://host:port/db"
    )
