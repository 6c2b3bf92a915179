"""`sipr.PrefixRouter` (Kamailio `lcr` / `drouting`): routes by the longest
prefix of the Request-URI user, optionally of the caller too, within time
windows, to gateways by priority and weight; failover to the next gateway on
timeouts and the usual server errors.

    routes = sipr.PrefixRouter("sqlite:///var/lib/sipr/routes.db", app=app)

    @app.route
    async def route(req):
        await req.relay(routes.targets(req))

Gateways: `id`, `uri` (where to send), `strip` (leading digits to drop),
`prefix` (digits to put in front). Rules: `prefix` of the dialled number,
`caller_prefix` (of the From user, "" for any), `gateway` id, `priority`
(lower first), `weight` (share among equal priorities), `time` window
("mon-fri 08:00-18:00", "sat,sun", "" for always; the server's local time).
Operator page: docs/dispatcher.md ("Prefix routing").
"""

from __future__ import annotations

import logging
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sipr import _core

log = logging.getLogger("sipr.prefix_routing")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pr_gateways (
    id TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    strip INTEGER NOT NULL DEFAULT 0,
    prefix TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS pr_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL DEFAULT '',
    caller_prefix TEXT NOT NULL DEFAULT '',
    gateway TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    weight INTEGER NOT NULL DEFAULT 1,
    time TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1
);
"""

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PrefixRoutingError(Exception):
    """Rules or gateways that cannot be used: the message names the row."""


@dataclass(frozen=True)
class Gateway:
    id: str
    uri: str
    strip: int = 0
    prefix: str = ""


@dataclass(frozen=True)
class Window:
    """Days of the week (0 = Monday) and minutes of the day [start, end)."""

    days: frozenset[int]
    start: int = 0
    end: int = 24 * 60

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        if when.weekday() not in self.days:
            return False
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # across midnight

    @staticmethod
    def parse(text: str) -> Window | None:
        """ "mon-fri 08:00-18:00", "sat,sun", "22:00-06:00", "" (always)."""
        text = text.strip().lower()
        if not text:
            return None
        days: set[int] = set()
        start, end = 0, 24 * 60
        for part in text.split():
            if ":" in part:
                a, sep, b = part.partition("-")
                if not sep:
                    raise ValueError(f"time range {part!r}: expected HH:MM-HH:MM")
                start, end = _minutes(a), _minutes(b)
            else:
                for item in part.split(","):
                    a, sep, b = item.partition("-")
                    if a not in DAYS or (sep and b not in DAYS):
                        raise ValueError(f"day {item!r}: use {', '.join(DAYS)} or ranges mon-fri")
                    i, j = DAYS.index(a), DAYS.index(b) if sep else DAYS.index(a)
                    days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        return Window(frozenset(days or range(7)), start, end)


def _minutes(hhmm: str) -> int:
    h, sep, m = hhmm.partition(":")
    if not sep or not (h.isdigit() and m.isdigit()) or int(h) > 24 or int(m) > 59:
        raise ValueError(f"time {hhmm!r}: expected HH:MM")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class Rule:
    prefix: str
    gateway: str
    caller_prefix: str = ""
    priority: int = 0
    weight: int = 1
    window: Window | None = None


@dataclass(frozen=True)
class Target:
    """One gateway attempt: what `req.relay()` reads (`uri`, `next_hop`)."""

    uri: str
    next_hop: str
    path: list[str] = field(default_factory=list)


class PrefixRouter:
    def __init__(
        self,
        source: str | None = None,
        *,
        gateways: list[Gateway] | None = None,
        rules: list[Rule] | None = None,
        app: Any = None,
        codes: list[int] | None = None,
    ) -> None:
        """`source`: `sqlite:///path.db` (tables `pr_gateways`, `pr_rules`),
        or give `gateways=` and `rules=`. `codes`: answers that move on to
        the next gateway (default 408, 500, 502, 503, 504)."""
        if source is None and (gateways is None or rules is None):
            raise ValueError("PrefixRouter needs a sqlite:// source or gateways= and rules=")
        self.source = source
        self._gateways = list(gateways or [])
        self._rules = list(rules or [])
        self.codes = codes
        self.gateways: dict[str, Gateway] = {}
        self.by_prefix: dict[str, list[Rule]] = {}
        self.longest = 0
        self.routed = 0
        self.unrouted = 0
        self.load()
        if app is not None:
            app.rpc("lcr.reload")(self._rpc_reload)
            app.rpc("lcr.dump")(self._rpc_dump)

    def read(self) -> tuple[list[Gateway], list[Rule]]:
        if self.source is None:
            return self._gateways, self._rules
        parts = urlsplit(self.source)
        if parts.scheme != "sqlite" or not parts.path:
            raise PrefixRoutingError(f"{self.source}: expected sqlite:///path/to/routes.db")
        try:
            db = connect(parts.path)
            try:
                gws = [
                    Gateway(str(i), str(u), int(s), str(p or ""))
                    for i, u, s, p in db.execute("SELECT id, uri, strip, prefix FROM pr_gateways")
                ]
                rows = db.execute(
                    "SELECT id, prefix, caller_prefix, gateway, priority, weight, time"
                    " FROM pr_rules WHERE enabled != 0 ORDER BY id"
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error as e:
            raise PrefixRoutingError(f"prefix routes {parts.path}: {e}") from e
        rules = []
        for rid, prefix, caller, gw, prio, weight, when in rows:
            try:
                window = Window.parse(when or "")
            except ValueError as e:
                raise PrefixRoutingError(f"pr_rules id {rid}: {e}") from e
            rules.append(
                Rule(str(prefix), str(gw), str(caller or ""), int(prio), int(weight), window)
            )
        return gws, rules

    def load(self) -> int:
        """(Re)loads gateways and rules; a bad row refuses the whole load."""
        gws, rules = self.read()
        gateways = {g.id: g for g in gws}
        for g in gws:
            try:
                uri = _core.parse_uri(g.uri)
            except ValueError as e:
                raise PrefixRoutingError(f"gateway {g.id}: {e}") from e
            if uri.scheme not in ("sip", "sips"):
                raise PrefixRoutingError(f"gateway {g.id}: {g.uri!r} is not a sip: URI")
        by_prefix: dict[str, list[Rule]] = {}
        for r in rules:
            if r.gateway not in gateways:
                raise PrefixRoutingError(f"rule for prefix {r.prefix!r}: no gateway {r.gateway!r}")
            if r.weight < 0:
                raise PrefixRoutingError(f"rule for prefix {r.prefix!r}: negative weight")
            by_prefix.setdefault(r.prefix, []).append(r)
        self.gateways, self.by_prefix = gateways, by_prefix
        self.longest = max((len(p) for p in by_prefix), default=0)
        log.info("prefix routing: %d rule(s), %d gateway(s)", len(rules), len(gateways))
        return len(rules)

    async def reload(self) -> int:
        return self.load()

    def match(self, number: str, caller: str = "", when: datetime | None = None) -> list[Rule]:
        """The rules of the longest prefix of `number` that apply to `caller`
        now (longest caller prefix first among them)."""
        when = when or datetime.now()
        for n in range(min(len(number), self.longest), -1, -1):
            rules = self.by_prefix.get(number[:n])
            if not rules:
                continue
            usable = [
                r
                for r in rules
                if caller.startswith(r.caller_prefix)
                and (r.window is None or r.window.contains(when))
            ]
            if usable:
                best = max(len(r.caller_prefix) for r in usable)
                return [r for r in usable if len(r.caller_prefix) == best]
        return []

    def gateways_for(
        self, number: str, caller: str = "", when: datetime | None = None
    ) -> list[Gateway]:
        """Gateways in the order to try: priority (lower first), then a
        weighted draw among equal priorities."""
        rules = self.match(number, caller, when)
        out: list[Gateway] = []
        for prio in sorted({r.priority for r in rules}):
            group = [r for r in rules if r.priority == prio]
            while group:
                weights = [max(r.weight, 0) for r in group]
                pick = (
                    random.choices(range(len(group)), weights)[0]
                    if sum(weights)
                    else random.randrange(len(group))
                )
                gw = self.gateways[group.pop(pick).gateway]
                if gw not in out:
                    out.append(gw)
        return out

    def targets(self, req: _core.Request, when: datetime | None = None) -> _core.Serial:
        """What `req.relay()` takes: the gateways for the request's number,
        tried one after another (an empty list relays to nothing: 503)."""
        number = req.uri.user or ""
        caller = req.from_.uri.user or ""
        gws = self.gateways_for(number, caller, when)
        if gws:
            self.routed += 1
        else:
            self.unrouted += 1
        out = []
        for gw in gws:
            hop = _core.parse_uri(gw.uri)
            user = gw.prefix + number[gw.strip :]
            scheme = hop.scheme
            port = f":{hop.port}" if hop.port else ""
            host = f"[{hop.host}]" if ":" in hop.host else hop.host
            out.append(Target(uri=f"{scheme}:{user}@{host}{port}", next_hop=gw.uri))
        return _core.Serial(out, codes=self.codes)

    async def _rpc_reload(self) -> dict[str, Any]:
        """Re-reads prefix routes and gateways from the store."""
        try:
            n = self.load()
        except PrefixRoutingError as e:
            raise ValueError(f"reload refused, the running routes stay: {e}") from e
        return {"reloaded": True, "rules": n}

    async def _rpc_dump(self) -> list[dict[str, Any]]:
        """Prefix routes: prefix, caller prefix, gateway, priority, weight."""
        return [
            {
                "prefix": r.prefix,
                "caller_prefix": r.caller_prefix,
                "gateway": r.gateway,
                "uri": self.gateways[r.gateway].uri,
                "priority": r.priority,
                "weight": r.weight,
                "time": "" if r.window is None else _window_text(r.window),
            }
            for p in sorted(self.by_prefix)
            for r in self.by_prefix[p]
        ]


def _window_text(w: Window) -> str:
    days = ",".join(DAYS[d] for d in sorted(w.days))
    return f"{days} {w.start // 60:02d}:{w.start % 60:02d}-{w.end // 60:02d}:{w.end % 60:02d}"


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db
