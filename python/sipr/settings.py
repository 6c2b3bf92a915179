"""Settings: one frozen dataclass per concern, each default written once.

The core's own defaults (the pending bound, the RFC 3261 timers, the
connection limits) are read from the Rust core (`_core.core_defaults()`);
the others are written here. `App(...)`'s signature, `sipr run --help`,
`cfg.list` and docs/settings.md all read these classes:
`scripts/settings-doc` writes the docs page and a test checks that
docs/settings.md holds `markdown()` (docs/decisions/0025-settings-objects.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sipr import _core
from sipr._loop import EVENT_LOOPS

_CORE = _core.core_defaults()

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
UDP_READERS = ("loop", "thread")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    cfg: str | None = None,
    env: str | None = None,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    unit: str = "",
) -> Any:
    """A dataclass field with its documentation: `help` (one line), the
    `sipr run` flag, the runtime (`cfg.set`) name, the environment
    variable, bounds and choices."""
    meta = {
        "help": help,
        "flag": flag,
        "cfg": cfg,
        "env": env,
        "low": low,
        "high": high,
        "choices": choices,
        "unit": unit,
    }
    if isinstance(default, list | dict):
        raise TypeError("settings are frozen: use a tuple for a sequence default")
    return dataclasses.field(default=default, metadata=meta)


def check_value(label: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raises ValueError naming `label` when `value` is outside the
    setting's bounds or choices."""
    choices = meta.get("choices") or ()
    if choices and value not in choices:
        raise ValueError(f"{label} must be one of {', '.join(choices)}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{label} must be {low:g} to {high:g}, got {value:g}")
    if low is not None and value < low:
        raise ValueError(f"{label} must be at least {low:g}, got {value:g}")


@dataclass(frozen=True)
class _Checked:
    """Checks every field against its bounds and choices when made."""

    #: Names errors as `<label_prefix><field>` where no flag names the field.
    label_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            label = f.metadata.get("flag") or self.label_prefix + f.name
            check_value(label, getattr(self, f.name), f.metadata)


@dataclass(frozen=True)
class CoreSettings(_Checked):
    """Admission and routing defaults of the Rust core (`App(...)` arguments)."""

    max_pending: int = setting(
        _CORE["max_pending"],
        "requests the app may hold before the core answers 503 + Retry-After",
        cfg="core.max_pending",
        low=1,
        high=10_000_000,
    )
    retry_after: int = setting(
        _CORE["retry_after"],
        "seconds in the Retry-After of the core's 503 (overload, shutdown)",
        cfg="core.retry_after",
        low=0,
        high=86_400,
        unit="s",
    )
    max_message_size: int = setting(
        _CORE["max_message_size"],
        "largest SIP message accepted, in bytes",
        low=1024,
        high=1 << 24,
    )
    record_route: bool = setting(True, "relay() adds Record-Route to dialog-creating requests")
    force_rport: bool = setting(
        False,
        "answer every UDP request at its source address and port, as if its top Via had "
        "rport (RFC 3581 §4); for an edge facing phones behind NAT",
    )
    udp_reader: str = setting(
        "loop",
        'who reads UDP: the event loop, or a Rust "thread" per socket (docs/decisions/0019)',
        env="SIPR_UDP_READER",
        choices=UDP_READERS,
    )


@dataclass(frozen=True)
class TimerSettings(_Checked):
    """RFC 3261 timers of the transaction layer (`App(timers={...})`)."""

    t1: float = setting(
        _CORE["t1"],
        "seconds, RFC 3261 T1 (RTT estimate): retransmit intervals, INVITE timeout 64*T1",
        cfg="tm.t1",
        low=0.001,
        high=86_400,
        unit="s",
    )
    t2: float = setting(
        _CORE["t2"],
        "seconds, RFC 3261 T2: the longest retransmit interval",
        cfg="tm.t2",
        low=0.001,
        high=86_400,
        unit="s",
    )
    t4: float = setting(
        _CORE["t4"],
        "seconds, RFC 3261 T4: how long a message stays in the network",
        cfg="tm.t4",
        low=0.001,
        high=86_400,
        unit="s",
    )
    timer_c: float = setting(
        _CORE["timer_c"],
        "seconds, proxy INVITE timeout (Timer C) without a final answer",
        cfg="tm.timer_c",
        low=0.001,
        high=86_400,
        unit="s",
    )

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, float] | None) -> TimerSettings:
        """The defaults with `overrides` (keys t1, t2, t4, timer_c) applied."""
        given = dict(overrides or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(given) - set(names)
        if unknown:
            raise ValueError(f"unknown timer(s) {sorted(unknown)}: use {', '.join(names)}")
        return cls(**{k: float(v) for k, v in given.items()})

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RouteSettings(_Checked):
    """How the serving loop runs route handlers (`App(...)` arguments)."""

    route_deadline: float = setting(
        30.0,
        "seconds a route handler may run before it is cancelled",
        cfg="tm.route_deadline",
        low=0.001,
        high=86_400,
        unit="s",
    )
    default_reply: tuple[int, str | None] = setting(
        (404, None),
        "status (and reason) sent when a handler returns without acting",
        cfg="core.default_reply",
    )
    deadline_reply: tuple[int, str | None] = setting(
        (500, None), "status (and reason) sent when the route deadline cancels a handler"
    )
    stall_threshold: float = setting(
        0.2,
        "seconds the event loop may be blocked before a stall is logged",
        cfg="watchdog.stall_threshold",
        low=0.001,
        high=3600,
        unit="s",
    )
    eager: bool = setting(
        False,
        "run a handler's first step without a task on Python 3.11 (docs/decisions/0004)",
        env="SIPR_EAGER=1",
    )


@dataclass(frozen=True)
class RunSettings(_Checked):
    """What `sipr run` (or `App.run`) serves on and how it logs and stops."""

    listen: tuple[str, ...] = setting(
        ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"),
        "listen URIs: udp:127.0.0.1:5060, tcp:[::1]:5060, tls:0.0.0.0:5061, ws:…, wss:…",
        flag="--listen",
    )
    log_level: str = setting(
        "info", "log level", flag="--log-level", cfg="log.level", choices=LOG_LEVELS
    )
    log_format: str = setting(
        "text", "log lines as text, or one JSON object per line", flag="--log-format",
        choices=LOG_FORMATS,
    )  # fmt: skip
    drain_timeout: float = setting(
        10.0,
        "seconds SIGTERM waits for in-flight transactions before exiting",
        flag="--drain-timeout",
        cfg="shutdown.drain_timeout",
        low=0,
        high=86_400,
        unit="s",
    )
    event_loop: str = setting(
        "auto",
        "asyncio event loop: uvloop (auto picks it when installed: less CPU per message), "
        "or the standard library's (docs/decisions/0060)",
        flag="--event-loop",
        env="SIPR_EVENT_LOOP",
        choices=EVENT_LOOPS,
    )


@dataclass(frozen=True)
class ConnectionSettings(_Checked):
    """TCP, TLS and WebSocket connections of the core."""

    connect_timeout: float = setting(
        _CORE["connect_timeout"],
        "fail a TCP/TLS connect (and a TLS handshake) after S seconds",
        flag="--tcp-connect-timeout",
        low=0.001,
        high=3600,
        unit="s",
    )
    connect_backoff: float = setting(
        _CORE["connect_backoff"],
        "after a TCP/TLS connect to an address fails, fail new connects to it at once for "
        "S seconds: no connect per queued answer to a peer that went away (0: off)",
        flag="--tcp-connect-backoff",
        low=0,
        high=3600,
        unit="s",
    )
    connection_lifetime: float = setting(
        _CORE["connection_lifetime"],
        "close idle TCP/TLS connections after S seconds (a WebSocket client is pinged first)",
        flag="--tcp-connection-lifetime",
        low=0.001,
        high=86_400 * 7,
        unit="s",
    )
    max_connections: int = setting(
        _CORE["max_connections"],
        "bound on open TCP/TLS/WS connections",
        flag="--max-connections",
        low=1,
        high=10_000_000,
    )


@dataclass(frozen=True)
class DnsSettings(_Checked):
    """RFC 3263 resolution: name servers, destination blocklist, failover (docs/dns.md)."""

    resolvers: tuple[str, ...] = setting(
        (),
        "DNS server for RFC 3263 lookups, repeatable: HOST:PORT (default: resolv.conf)",
        flag="--resolver",
    )
    blocklist_time: float = setting(
        60.0,
        "seconds a destination that timed out or was unreachable is tried last (0: off)",
        cfg="dns.blocklist_time",
        low=0,
        high=86_400,
        unit="s",
    )
    failover_timeout: float = setting(
        5.0,
        "seconds a destination with alternatives may stay silent before the next is tried",
        cfg="dns.failover_timeout",
        low=0,
        high=86_400,
        unit="s",
    )


@dataclass(frozen=True)
class TlsSettings(_Checked):
    """Certificates for tls: and wss: listeners and outgoing TLS
    (docs/decisions/0010-tls-transport-and-options.md)."""

    cert: Path | None = setting(
        None, "PEM certificate chain for tls: and wss: listeners", flag="--tls-cert"
    )
    key: Path | None = setting(None, "PEM private key of --tls-cert", flag="--tls-key")
    sni: tuple[tuple[str, Path, Path], ...] = setting(
        (),
        "per-domain certificate chosen by SNI, repeatable: DOMAIN=CERT.pem,KEY.pem",
        flag="--tls-sni",
    )
    client_ca: Path | None = setting(
        None, "PEM CAs that client certificates must chain to", flag="--tls-client-ca"
    )
    verify_client: bool = setting(
        False, "refuse TLS clients without a valid certificate (mTLS)", flag="--tls-verify-client"
    )
    verify_client_on: tuple[str, ...] = setting(
        (),
        "require client certificates on this TLS listener only, repeatable: IP:PORT",
        flag="--tls-verify-client-on",
    )
    ca: Path | None = setting(
        None, "PEM CAs trusted for outgoing TLS (default: the system's roots)", flag="--tls-ca"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if (self.verify_client or self.verify_client_on) and self.client_ca is None:
            raise ValueError("--tls-verify-client(-on) needs --tls-client-ca")

    @property
    def configured(self) -> bool:
        """Whether certificates were given (SIGHUP re-reads them)."""
        return self.cert is not None or bool(self.sni)


@dataclass(frozen=True)
class ControlSettings(_Checked):
    """The control plane: `sipr ctl` socket and the HTTP listener (docs/operations.md)."""

    ctl_socket: Path | None = setting(
        None,
        "control socket path (default: <run dir>/sipr-<first listener>.ctl; --no-ctl: none)",
        flag="--ctl",
    )
    default_socket: bool = setting(
        False,
        "no path given: a socket named after the first listener, so instances coexist",
    )
    http: tuple[str, int] | None = setting(
        None, "HTTP control listener HOST:PORT: /rpc, /metrics, status page", flag="--http"
    )
    http_token: str | None = setting(
        None,
        "bearer token for the HTTP listener (required off loopback)",
        flag="--http-token",
        env="SIPR_HTTP_TOKEN",
    )


@dataclass(frozen=True)
class FloodSettings(_Checked):
    """Flood detection in the core (`sipr.FloodGuard`, Kamailio `pike`): per source (IPv4
    address, IPv6 /64) requests over a sliding window; above `limit` the source is banned
    and its packets dropped unparsed, unanswered (docs/security.md)."""

    label_prefix: ClassVar[str] = "flood."

    enabled: bool = setting(True, "count requests per source and ban floods")
    limit: int = setting(400, "requests per window that ban a source", low=1, high=10_000_000)
    window: float = setting(2.0, "sliding window of the count", low=0.01, high=3600, unit="s")
    ban: float = setting(300.0, "how long a flooding source stays banned", low=0.01, unit="s")
    max_sources: int = setting(
        100_000,
        "sources tracked at once (~40 bytes each; the least recent are forgotten)",
        low=1,
        high=100_000_000,
    )


@dataclass(frozen=True)
class AuthBanSettings(_Checked):
    """Authentication-failure bans (`sipr.AuthBans`, fail2ban inside the server): failed
    digest attempts ban their source, or lock their user against every source that has
    not authenticated as it lately (docs/security.md)."""

    label_prefix: ClassVar[str] = "auth."

    enabled: bool = setting(True, "count failed digest attempts and ban or lock")
    source_failures: int = setting(
        10, "failures from one source within `window` that ban it", low=1, high=1_000_000
    )
    window: float = setting(60.0, "window of the failure counts", low=0.01, unit="s")
    source_ban: float = setting(600.0, "how long such a source stays banned", low=0.01, unit="s")
    user_failures: int = setting(
        30, "failures for one user (any source) within `window` that lock it", low=1
    )
    user_lock: float = setting(300.0, "how long a locked user is refused", low=0.01, unit="s")
    known_for: float = setting(
        7 * 24 * 3600.0,
        "a source that authenticated as a user is exempt from its locks this long",
        low=0.01,
        unit="s",
    )


@dataclass(frozen=True)
class DialogSettings(_Checked):
    """Tracked dialogs (`req.track_dialog()`, `app.dialogs`; docs/dialogs.md)."""

    max_dialogs: int = setting(
        200_000,
        "bound on tracked dialogs: track_dialog() beyond it raises sipr.DialogError",
        low=1,
        high=10_000_000,
    )
    default_timeout: float = setting(
        43_200.0,
        "lifetime of a confirmed dialog whose route gave no timeout (Kamailio default_timeout)",
        low=0.001,
        high=86_400 * 30,
        unit="s",
    )
    setup_timeout: float = setting(
        200.0,
        "drop a dialog whose INVITE got no final answer after S seconds (beyond Timer C)",
        low=0.001,
        high=86_400,
        unit="s",
    )


@dataclass(frozen=True)
class AccountingSettings(_Checked):
    """Accounting records and CDRs written off the routing path
    (`sipr.Accounting(url, ...)`; docs/accounting.md)."""

    batch_size: int = setting(500, "records per database write", low=1, high=100_000)
    interval: float = setting(
        0.1, "seconds a batch may gather before it is written", low=0.001, high=60, unit="s"
    )
    max_pending: int = setting(
        20_000,
        "records kept in memory while the database is down; more go to the spool",
        low=1,
        high=10_000_000,
    )
    spool_max_bytes: int = setting(
        256 << 20, "bound on the on-disk spool (oldest segments dropped past it)", low=4096
    )
    retry_max: float = setting(
        5.0, "longest back-off between retries of a failed write", low=0.001, high=3600, unit="s"
    )
    flush_timeout: float = setting(
        5.0,
        "at shutdown, seconds to write what is pending before it goes to the spool",
        low=0,
        high=3600,
        unit="s",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_pending < self.batch_size:
            raise ValueError("Accounting: max_pending must be at least batch_size")


#: The classes documented in docs/settings.md, in order.
ALL: tuple[type[Any], ...] = (
    RunSettings,
    CoreSettings,
    TimerSettings,
    RouteSettings,
    ConnectionSettings,
    DnsSettings,
    TlsSettings,
    ControlSettings,
    FloodSettings,
    AuthBanSettings,
    DialogSettings,
    AccountingSettings,
)


def meta(cls: type[Any], name: str) -> Mapping[str, Any]:
    """The documentation of field `name` of settings class `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def default(cls: type[Any], name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def env_flag(name: str) -> str | None:
    """An environment variable's value, or None when unset or empty."""
    return os.environ.get(name) or None


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if not value:
            return "—"
        if len(value) == 2 and value[1] is None and isinstance(value[0], int):
            return str(value[0])  # (status, reason=None)
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown() -> str:
    """The tables of docs/settings.md."""
    out: list[str] = []
    for cls in ALL:
        doc = (cls.__doc__ or "").strip().replace("\n    ", " ")
        out += [f"## `{cls.__name__}`", "", doc, ""]
        out += [
            "| setting | default | `sipr run` | `cfg.set` | description |",
            "|---|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            m = f.metadata
            unit = f" {m['unit']}" if m["unit"] and f.default is not None else ""
            described = m["help"]
            if m["env"]:
                described += f" (env `{m['env']}`)"
            if m["choices"]:
                described += f"; one of {', '.join(m['choices'])}"
            cells = [
                f"`{f.name}`",
                f"{_shown(f.default)}{unit}",
                f"`{m['flag']}`" if m["flag"] else "",
                f"`{m['cfg']}`" if m["cfg"] else "",
                described,
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
