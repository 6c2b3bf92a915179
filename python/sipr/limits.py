"""Rate limits for the route (Kamailio `ratelimit` / `pipelimit`): token
buckets keyed by anything the route chooses.

    import sipr

    @app.route
    async def route(req):
        if req.method == "INVITE":
            taken = await sipr.limits.take("calls:" + req.from_.uri.user, rate=5, per=1.0)
            if not taken:
                return sipr.limits.reject(req, taken)       # 503 + Retry-After
        ...

A bucket holds at most `burst` tokens (default: `rate`) and gains `rate`
per `per` seconds; each `take` costs `cost` (default 1). The default
backend is the process's memory (a bounded native table: idle buckets are
forgotten, which changes nothing since a full bucket is the same as none).
`sipr.limits.use("redis://host:6379/0")` puts the buckets in Redis, atomic
per take (one Lua script, Redis's clock), so several sipr processes or
machines share one limit (docs/decisions/0034).
"""

from __future__ import annotations

import math
from typing import Any

from sipr._core import TokenBuckets

#: Buckets kept in memory at most (idle ones are forgotten first).
MEMORY_CAPACITY = 100_000


class Taken:
    """The answer of `take`: true when the tokens were taken. `retry_after`
    is the seconds until they would be there (0 when taken)."""

    __slots__ = ("ok", "remaining", "retry_after")

    def __init__(self, ok: bool, remaining: float, retry_after: float) -> None:
        self.ok = ok
        self.remaining = remaining
        self.retry_after = retry_after

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"<Taken ok={self.ok} remaining={self.remaining:g} retry_after={self.retry_after:g}>"

    @property
    def retry_after_header(self) -> str:
        """Whole seconds for a Retry-After header (at least 1)."""
        wait = self.retry_after
        return str(max(1, math.ceil(wait))) if math.isfinite(wait) else "3600"


def _check(rate: float, per: float, burst: float | None, cost: float) -> float:
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a number >= 0, got {rate!r}")
    if not (per > 0 and math.isfinite(per)):
        raise ValueError(f"per must be a positive number of seconds, got {per!r}")
    capacity = rate if burst is None else burst
    if not (capacity >= 1 and math.isfinite(capacity)):
        raise ValueError(f"burst must be at least 1, got {capacity!r}")
    if not (cost > 0 and math.isfinite(cost)):
        raise ValueError(f"cost must be a positive number, got {cost!r}")
    return capacity


class MemoryLimiter:
    """Buckets in this process (native, bounded)."""

    def __init__(self, capacity: int = MEMORY_CAPACITY) -> None:
        self.buckets = TokenBuckets(capacity)

    async def take(
        self,
        key: str,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        cost: float = 1.0,
    ) -> Taken:
        return Taken(*self.buckets.take(key, rate, per, burst, cost))

    def snapshot(self) -> list[tuple[str, float, float, float]]:
        return self.buckets.snapshot()

    async def close(self) -> None:
        pass


#: One take, atomic in Redis: refill by Redis's clock, take or refuse, keep
#: the bucket only as long as it takes to fill up again.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or t
if t > ts then tokens = math.min(burst, tokens + (t - ts) * rate) end
local ok = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  ok = 1
elseif rate > 0 then
  retry = (cost - tokens) / rate
else
  retry = -1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
local ttl = 3600000
if rate > 0 then ttl = math.ceil(burst / rate * 1000) + 1000 end
redis.call('PEXPIRE', KEYS[1], ttl)
return {ok, tostring(tokens), tostring(retry)}
"""


class RedisLimiter:
    """Buckets in Redis, shared by every process that uses the same URL."""

    def __init__(self, url: str, prefix: str = "sipr:limit:") -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.from_url(url)
        self.prefix = prefix
        self.script = self.r.register_script(_TAKE_LUA)

    async def take(
        self,
        key: str,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        cost: float = 1.0,
    ) -> Taken:
        capacity = _check(rate, per, burst, cost)
        ok, tokens, retry = await self.script(
            keys=[self.prefix + key], args=[rate / per, capacity, cost]
        )
        wait = float(retry)
        return Taken(bool(int(ok)), float(tokens), math.inf if wait < 0 else wait)

    def snapshot(self) -> list[tuple[str, float, float, float]]:
        return []

    async def close(self) -> None:
        await self.r.aclose()


Limiter = MemoryLimiter | RedisLimiter

_limiter: Limiter | None = None


def limiter() -> Limiter:
    """The backend `take` uses (memory until `use()` chooses another)."""
    global _limiter
    if _limiter is None:
        _limiter = MemoryLimiter()
    return _limiter


def use(url: str = "memory:") -> Limiter:
    """Chooses the backend: `memory:` or `redis://host:port/db`."""
    global _limiter
    if url in ("memory:", "memory", "memory://"):
        _limiter = MemoryLimiter()
    elif url.startswith(("redis://", "rediss://")):
        _limiter = RedisLimiter(url)
    else:
        raise ValueError(f"unknown limits backend {url!r}: use memory: or redis://host:port/db")
    return _limiter


async def take(
    key: str, rate: float, per: float = 1.0, *, burst: float | None = None, cost: float = 1.0
) -> Taken:
    """Takes `cost` tokens from bucket `key` (`rate` per `per` seconds, at
    most `burst`, default `rate`). False-y when the limit is reached."""
    return await limiter().take(key, rate, per, burst=burst, cost=cost)


def reject(req: Any, taken: Taken, status: int = 503, reason: str | None = None) -> None:
    """Answers a limited request: `status` (503 by default) with Retry-After."""
    req.reply(status, reason, headers={"Retry-After": taken.retry_after_header})
