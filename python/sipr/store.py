"""Location and credential stores behind one interface: `memory:` (default),
`sqlite:///path/location.db` (embedded, persistent) and `redis://host:port/db`
(shared by several sipr instances).

`memory:` and `sqlite:` are implemented in Rust (`sipr._core.Store`), so the
core's native REGISTER path can use them too (`Registrar.serve`); `redis://`
and any store an application writes itself implement the `Store` protocol in
Python, and the registrar drives them through the same Rust rules
(docs/decisions/0028).

Writes are applied before `save()` returns, so before the registrar's 200 goes
out. SQLite runs in WAL mode with `synchronous=NORMAL`: a committed binding
survives a crash of sipr, not necessarily a power cut of the machine (use
`sqlite:///path?synchronous=full` for that, at one fsync per REGISTER).
"""

from __future__ import annotations

import json
import time
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sipr._core import Binding
from sipr._core import Store as NativeHandle

__all__ = [
    "Binding",
    "MemoryStore",
    "MissingExtra",
    "NativeStore",
    "RedisStore",
    "SqliteStore",
    "Store",
    "open_store",
]


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


class NativeStore:
    """A store implemented in Rust (`native`), with the `Store` protocol's
    async methods. Calls return at once (a lock, or a local SQLite
    transaction)."""

    def __init__(self, url: str) -> None:
        self.native = NativeHandle(url)

    async def bindings(self, aor: str) -> list[Binding]:
        return self.native.bindings(aor)

    async def update(self, aor: str, upsert: list[Binding], delete: list[str]) -> None:
        self.native.update(aor, upsert, delete)

    async def remove(self, aor: str) -> int:
        return self.native.remove(aor)

    async def aors(self) -> list[str]:
        return self.native.aors()

    async def get_user(self, realm: str, user: str) -> dict[str, str] | None:
        return self.native.get_user(realm, user)

    async def set_user(self, realm: str, user: str, ha1: dict[str, str]) -> None:
        self.native.set_user(realm, user, ha1)

    async def remove_user(self, realm: str, user: str) -> bool:
        return self.native.remove_user(realm, user)

    async def users(self, realm: str | None = None) -> list[tuple[str, str]]:
        return self.native.users(realm)

    async def close(self) -> None:
        pass


class MemoryStore(NativeStore):
    """Process-local: fast, gone at exit."""

    def __init__(self) -> None:
        super().__init__("memory:")


class SqliteStore(NativeStore):
    """Embedded and persistent (WAL: several processes may share the file)."""

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        super().__init__(f"sqlite://{path}?synchronous={synchronous}")


class RedisStore:
    """Shared by several sipr instances: each AoR is a hash of contact ->
    binding (JSON), expiring with its last binding."""

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
        now = time.time()
        found = [Binding.from_json(v) for v in raw.values()]
        return [b for b in found if b.expires_at > now]

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

    async def fresh_nonce(self, nonce: str, nc: int, ttl: float) -> bool:
        """Records digest nonce-count `nc` if it is above every one seen for
        `nonce` by any instance on this Redis; False is a replay (decision 0051)."""
        key = f"{self.prefix}nc:{nonce}"
        fresh = await self.r.eval(_FRESH_NONCE, 1, key, nc, max(1, int(ttl)))
        return bool(fresh)

    async def close(self) -> None:
        await self.r.aclose()


#: One round trip, atomic on the Redis server: a replay sent to two
#: instances at once is accepted by one at most.
_FRESH_NONCE = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > seen then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""


def parse_store_url(url: str, what: str = "store") -> tuple[str, str, str]:
    """(kind, target, synchronous) of a store URL: ("memory", "", ""), ("sqlite", path,
    the `synchronous=` pragma, "normal" by default) or ("redis", url, ""). ValueError names
    `what` and the accepted forms. One parser for every store the project opens."""
    if url in ("memory:", "memory://", "memory"):
        return "memory", "", ""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError(f"{what} URL {url!r} names no database file")
        return "sqlite", path, parse_qs(parts.query).get("synchronous", ["normal"])[0]
    if parts.scheme in ("redis", "rediss"):
        return "redis", url, ""
    raise ValueError(
        f"unknown {what} URL {url!r}: use memory:, sqlite:///path.db or redis://host:port/db"
    )


def open_store(url: str) -> Store:
    """`memory:`, `sqlite:///abs/path.db` (`sqlite://rel/path.db`), `redis://host:port/db`."""
    kind, target, sync = parse_store_url(url)
    if kind == "sqlite":
        return SqliteStore(target, sync)
    if kind == "redis":
        return RedisStore(target)
    return MemoryStore()
