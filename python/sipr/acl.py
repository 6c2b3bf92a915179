"""Address groups (Kamailio `permissions`, address table): which networks,
ports and transports belong to a group such as "carriers", for trunks and
gateways trusted by address instead of a password.

    acl = sipr.AddressGroups("/etc/sipr/address.txt")   # or a store URL
    app = sipr.App(security=sipr.Security(acl=acl))

    @app.route
    async def route(req):
        if req.source_in("carriers"):           # allow_source_address("carriers")
            return await req.relay(gateway)
        if not await auth.check(req):
            return
        ...

    # allow_address: any address, e.g. the one a trusted SBC reports
    if acl.allows("pbx", req.headers.get("X-Real-IP", "")) is not None: ...

The rules file has one rule per line, `GROUP NETWORK [PORT] [TRANSPORT] [TAG]`:

    # group    network          port  transport  tag
    carriers   192.0.2.0/24     5060  udp        Carrier A
    carriers   198.51.100.7                      Carrier B
    pbx        2001:db8:5::/48  *     tcp

A store (`sqlite:///path.db`, `redis://host:port/db`) holds the same rows
(`sipr.acl.save_rules`). `sipr ctl permissions.reload` (or SIGHUP's script
reload) reads them again without a restart; a file with an error is refused
and the rules in force stay.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sipr._core import Security

Row = tuple[str, str, str, str, str]

#: Redis key of the rule list (JSON rows).
REDIS_KEY = "sipr:address"


def _row(fields: Iterable[Any]) -> Row:
    """(group, network[, port[, transport[, tag]]]) with the defaults filled in."""
    f = [("*" if v is None else str(v)) for v in fields]
    if not 2 <= len(f) <= 5:
        raise ValueError(f"an address rule is (group, network[, port[, transport[, tag]]]): {f}")
    f += ["*", "*", ""][len(f) - 2 :]
    return (f[0], f[1], f[2], f[3], f[4])


class AddressGroups:
    """The address rules of an app: from `source` (a rules file, or a store
    URL) and/or `rules` given in code as (group, network[, port[, transport[, tag]]])."""

    def __init__(
        self, source: str | Path | None = None, *, rules: Iterable[tuple[Any, ...]] = ()
    ) -> None:
        self.source = str(source) if source is not None else None
        self.rules = [_row(r) for r in rules]
        self.loaded = 0
        #: The running core's security services, once the rules are loaded there.
        self._native: Security | None = None

    async def read(self) -> tuple[str, list[Row]]:
        """(rules-file text, store rows) as they are now."""
        text, rows = "", list(self.rules)
        src = self.source
        if src is None:
            return text, rows
        scheme = urlsplit(src).scheme
        if scheme == "sqlite":
            rows += _sqlite_rows(_sqlite_path(src))
        elif scheme in ("redis", "rediss"):
            rows += await _redis_rows(src)
        else:
            path = Path(src)
            try:
                text = path.read_text()
            except OSError as e:
                raise ValueError(f"address rules {src}: {e.strerror or e}") from None
        return text, rows

    async def reload(self, native: Security) -> int:
        """Reads the rules again and puts them in force; returns how many.
        ValueError (naming the line) leaves the rules in force unchanged."""
        text, rows = await self.read()
        try:
            self.loaded = native.acl_load(text, rows)
        except ValueError as e:
            raise ValueError(f"address rules {self.source or '(code)'}: {e}") from None
        self._native = native
        return self.loaded

    def allows(self, group: str, host: str, port: int = 5060, transport: str = "udp") -> str | None:
        """The tag of the first rule of `group` matching the address ("" when
        it has none), or None (Kamailio `allow_address`): for an address other
        than the request's source, e.g. one a trusted SBC reports. The rules
        are those in force in the running server."""
        if self._native is None:
            raise RuntimeError("the address rules are not loaded: the app is not served")
        return self._native.allow_address(group, host, port, transport)

    def groups(self, host: str, port: int = 5060, transport: str = "udp") -> list[str]:
        """The groups whose rules match the address."""
        if self._native is None:
            raise RuntimeError("the address rules are not loaded: the app is not served")
        return self._native.groups_of(host, port, transport)


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc + parts.path) if parts.netloc else parts.path


SCHEMA = """CREATE TABLE IF NOT EXISTS address (
    grp TEXT NOT NULL, network TEXT NOT NULL, port TEXT NOT NULL DEFAULT '*',
    transport TEXT NOT NULL DEFAULT '*', tag TEXT NOT NULL DEFAULT '')"""


def _sqlite_rows(path: str) -> list[Row]:
    db = sqlite3.connect(path)
    try:
        db.execute(SCHEMA)
        rows = db.execute("SELECT grp, network, port, transport, tag FROM address ORDER BY rowid")
        return [_row(r) for r in rows]
    finally:
        db.close()


async def _redis_rows(url: str) -> list[Row]:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        raw = await r.lrange(REDIS_KEY, 0, -1)
    finally:
        await r.aclose()
    return [_row(json.loads(x)) for x in raw]


async def save_rules(url: str, rules: Iterable[tuple[Any, ...]]) -> int:
    """Replaces the rules kept in store `url` (sqlite:/// or redis://)."""
    rows = [_row(r) for r in rules]
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        db = sqlite3.connect(_sqlite_path(url))
        try:
            with db:
                db.execute(SCHEMA)
                db.execute("DELETE FROM address")
                db.executemany("INSERT INTO address VALUES (?,?,?,?,?)", rows)
        finally:
            db.close()
    elif scheme in ("redis", "rediss"):
        import redis.asyncio as aioredis

        r = aioredis.from_url(url)
        try:
            async with r.pipeline(transaction=True) as p:
                p.delete(REDIS_KEY)
                if rows:
                    p.rpush(REDIS_KEY, *[json.dumps(list(x)) for x in rows])
                await p.execute()
        finally:
            await r.aclose()
    else:
        raise ValueError(f"address rules store {url!r}: use sqlite:///path.db or redis://...")
    return len(rows)
