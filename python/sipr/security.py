"""Security at the edge: flood bans (Kamailio `pike`), authentication-failure
bans (fail2ban inside the server), a User-Agent / From-user blocklist
(`secfilter`), the `sanity` checklist, global per-method rate limits
(`pipelimit`), address groups (`permissions`, see `sipr.acl`) and topology
hiding (`topos`, see `sipr.topology`). Operator's page: docs/security.md.

The checks run in the Rust core before Python: a banned source costs no
parse, no answer and no handler call. `sipr.App()` comes with
`Security()` defaults that suit real phones: flood detection and
authentication bans on (loopback trusted), the known scanners' User-Agents
banned, no sanity checks, no method limits, no topology hiding.

    app = sipr.App(security=sipr.Security(
        trusted=["10.0.0.0/8"],
        flood=sipr.FloodGuard(limit=100, window=1.0, ban=600),
        method_limits={"INVITE": 200},          # per second, 503 + Retry-After
        sanity=True,
    ))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipr.settings import AuthBanSettings, FloodSettings

if TYPE_CHECKING:
    from sipr._core import Request
    from sipr.acl import AddressGroups
    from sipr.topology import TopologyHiding

log = logging.getLogger("sipr.security")

#: Scanners and toll-fraud tools that announce themselves in User-Agent
#: (matched case-insensitively as substrings).
SCANNER_USER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "vaxsipuseragent",
    "iwar",
    "sundayddr",
    "pplsip",
)

#: The `sanity` checks the core can apply (`Security(sanity=True)`: all).
SANITY_CHECKS = ("ruri_scheme", "cseq", "content_length", "proxy_require", "uris")

#: How often the ban log lines are written (and topology records stored)
#: while something happens; while nothing does, the interval doubles up to
#: HOUSEKEEPING_IDLE_SECONDS, so an idle server wakes for it twice a second
#: at most (a ban's log line is then up to that late, the ban itself is not:
#: it is enforced in the core the moment it is taken).
HOUSEKEEPING_SECONDS = 0.25
HOUSEKEEPING_IDLE_SECONDS = 2.0
#: Expired bans and locks are lifted at most this often (walks every table;
#: a banned source that sends again is let in at once anyway).
SWEEP_SECONDS = 1.0


#: Flood detection settings (`sipr.FloodGuard(limit=, window=, ban=)`; sipr.settings).
FloodGuard = FloodSettings
#: Authentication-failure ban settings (`sipr.AuthBans(...)`; sipr.settings).
AuthBans = AuthBanSettings


@dataclass
class Blocklist:
    """User-Agents (case-insensitive substrings) and From users (exact).
    `action`: "ban" (drop and ban the source for `ban` seconds, in the
    core), "drop" (drop, in the core) or "route" (only `check()` from the
    route)."""

    user_agents: Sequence[str] = SCANNER_USER_AGENTS
    from_users: Sequence[str] = ()
    action: str = "ban"
    ban: float = 3600.0

    def __post_init__(self) -> None:
        if self.action not in ("ban", "drop", "route"):
            raise ValueError(
                f'Blocklist action must be "ban", "drop" or "route", not {self.action!r}'
            )

    def check(self, req: Request) -> str | None:
        """The entry `req` matches (`"user-agent friendly-scanner"`,
        `"from-user 1001"`), or None: for the route, e.g.
        `if app.security.blocklist.check(req): return req.reply(403)`."""
        ua = (req.headers.get("User-Agent") or "").lower()
        if ua:
            for entry in self.user_agents:
                if entry.lower() in ua:
                    return f"user-agent {entry.lower()}"
        user = req.from_.uri.user
        if user is not None and user in self.from_users:
            return f"from-user {user}"
        return None


#: A method limit: requests per second, or (requests, per seconds), or
#: (requests, per seconds, burst).
MethodLimit = float | tuple[float, float] | tuple[float, float, float]


@dataclass
class Security:
    """Every security setting of an app (`sipr.App(security=...)`)."""

    #: Networks exempt from flood counting, bans and user locks.
    trusted: Sequence[str] = ("127.0.0.0/8", "::1")
    flood: FloodGuard = field(default_factory=FloodGuard)
    auth: AuthBans = field(default_factory=AuthBans)
    blocklist: Blocklist = field(default_factory=Blocklist)
    #: The sanity checks the core applies before Python: False (none), True
    #: (all of SANITY_CHECKS) or a list of their names.
    sanity: bool | Sequence[str] = False
    #: Global limits per request method for requests outside dialogs,
    #: answered 503 + Retry-After by the core: {"INVITE": 100, "REGISTER": (500, 1.0)}.
    method_limits: Mapping[str, MethodLimit] = field(default_factory=dict)
    #: Address groups (`req.source_in("carriers")`), from a file or a store.
    acl: AddressGroups | None = None
    #: Topology hiding of relayed dialogs (`sipr.TopologyHiding`).
    topology: TopologyHiding | None = None

    def sanity_checks(self) -> list[str]:
        if self.sanity is True:
            return list(SANITY_CHECKS)
        if self.sanity is False:
            return []
        checks = list(self.sanity)
        unknown = [c for c in checks if c not in SANITY_CHECKS]
        if unknown:
            raise ValueError(f"unknown sanity check(s) {unknown}: use {', '.join(SANITY_CHECKS)}")
        return checks


def _method_limit(method: str, spec: MethodLimit) -> tuple[float, float, float | None]:
    if isinstance(spec, (int, float)):
        return float(spec), 1.0, None
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        burst = float(spec[2]) if len(spec) == 3 else None
        return float(spec[0]), float(spec[1]), burst
    raise ValueError(f"method_limits[{method!r}]: use RATE, (RATE, PER) or (RATE, PER, BURST)")


def validate(security: Security) -> None:
    """Raises ValueError naming the first bad setting (before anything applies)."""
    import ipaddress

    for net in security.trusted:
        try:
            ipaddress.ip_network(net.strip("[]"), strict=False)
        except ValueError:
            raise ValueError(f"trusted: {net!r} is not an address or network") from None
    positive = {
        "flood.limit": security.flood.limit,
        "flood.window": security.flood.window,
        "flood.ban": security.flood.ban,
        "flood.max_sources": security.flood.max_sources,
        "auth.source_failures": security.auth.source_failures,
        "auth.window": security.auth.window,
        "auth.source_ban": security.auth.source_ban,
        "auth.user_failures": security.auth.user_failures,
        "auth.user_lock": security.auth.user_lock,
        "auth.known_for": security.auth.known_for,
        "blocklist.ban": security.blocklist.ban,
    }
    for name, value in positive.items():
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    security.sanity_checks()
    for method, spec in security.method_limits.items():
        rate, per, burst = _method_limit(method, spec)
        if rate < 0 or per <= 0 or (burst if burst is not None else rate) < 1:
            raise ValueError(
                f"method_limits[{method!r}]: rate >= 0, per > 0 and a burst of at least 1"
            )


def apply(security: Security, core: Any) -> None:
    """Hands the settings to the running core (at start and on reload).
    Raises ValueError naming a bad setting, before anything changed."""
    validate(security)
    native = core.security()
    f = security.flood
    native.configure_flood(
        enabled=f.enabled,
        limit=int(f.limit),
        window=float(f.window),
        ban=float(f.ban),
        max_sources=int(f.max_sources),
        trusted=list(security.trusted),
    )
    a = security.auth
    native.configure_auth_bans(
        enabled=a.enabled,
        source_failures=int(a.source_failures),
        window=float(a.window),
        source_ban=float(a.source_ban),
        user_failures=int(a.user_failures),
        user_lock=float(a.user_lock),
        known_for=float(a.known_for),
    )
    b = security.blocklist
    native.configure_screen(
        sanity=security.sanity_checks(),
        user_agents=list(b.user_agents),
        from_users=list(b.from_users),
        action=b.action,
        ban=float(b.ban),
    )
    native.clear_method_limits()
    for method, spec in security.method_limits.items():
        rate, per, burst = _method_limit(method, spec)
        native.set_method_limit(method, rate, per, burst)


class SecurityRuntime:
    """The security services of one running server: applies the app's
    settings, and every HOUSEKEEPING_SECONDS or so lifts expired bans and writes
    the ban log lines (one per ban, never one per packet)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.task: asyncio.Task[None] | None = None
        self.topology: Any = None
        self.acl: AddressGroups | None = None

    @property
    def native(self) -> Any:
        return self.server.core.security()

    async def start(self) -> None:
        security = self.server.app.security
        apply(security, self.server.core)
        await self._attach(security)
        self.task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _attach(self, security: Security) -> None:
        self.acl = security.acl
        if self.acl is not None:
            await self.acl.reload(self.native)
        if security.topology is not None and self.topology is None:
            from sipr.topology import TopologyRuntime

            self.topology = TopologyRuntime(security.topology, self.native)
            await self.topology.start()

    async def reload(self, app: Any) -> None:
        """A reloaded route script: its security settings apply from now on
        (topology hiding keeps the store it started with)."""
        apply(app.security, self.server.core)
        self.acl = app.security.acl
        if self.acl is not None:
            await self.acl.reload(self.native)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.server.core is not None:
            self.log_events()
        if self.topology is not None:
            await self.topology.stop()
            self.topology = None

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        interval = HOUSEKEEPING_SECONDS
        last_sweep = loop.time()
        while True:
            await asyncio.sleep(interval)
            busy = False
            try:
                if loop.time() - last_sweep >= SWEEP_SECONDS:
                    last_sweep = loop.time()
                    self.native.sweep()
                busy = self.log_events() > 0
                if self.topology is not None:
                    busy = await self.topology.flush() > 0 or busy
            except Exception:
                log.exception("security housekeeping failed")
            interval = (
                HOUSEKEEPING_SECONDS if busy else min(interval * 2, HOUSEKEEPING_IDLE_SECONDS)
            )

    def log_events(self) -> int:
        """Writes the log lines of the core's ban and lock events; how many."""
        events, lost = self.native.take_events()
        for kind, subject, reason, seconds, detail in events:
            suffix = f" ({detail})" if detail else ""
            if kind == "banned":
                log.warning("banned %s for %ds: %s%s", subject, seconds, reason, suffix)
            elif kind == "locked":
                log.warning("locked user %s for %ds: %s%s", subject, seconds, reason, suffix)
            elif kind == "unbanned":
                log.info("ban of %s lifted (%s)%s", subject, reason, suffix)
            else:
                log.info("user %s unlocked (%s)%s", subject, reason, suffix)
        if lost:
            log.warning("%d more security events not logged (event queue full)", lost)
        return len(events) + lost


def ban_rows(native: Any) -> list[dict[str, Any]]:
    """`ban.list` rows."""
    return [
        {
            "source": r["source"],
            "reason": r["reason"],
            "since": round(r["since"], 3),
            "expires_in": round(r["expires_in"], 1),
            "dropped": r["dropped"],
            "detail": r["detail"],
        }
        for r in native.ban_list()
    ]


def as_list(values: Iterable[str] | str) -> list[str]:
    return [values] if isinstance(values, str) else list(values)
