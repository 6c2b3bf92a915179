"""Type stubs for the native module `sipr._core` (Rust, PyO3: rust/src/python/).

Every name the module exports is described here; `python -m mypy.stubtest
sipr._core` checks that in CI (.ci/run)."""

import asyncio
import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypedDict, final

__all__ = [
    "URI",
    "Address",
    "CSeq",
    "Core",
    "Dispatcher",
    "Dns",
    "Headers",
    "Location",
    "NonceCounts",
    "Request",
    "Response",
    "Selection",
    "Serial",
    "SiprError",
    "Source",
    "TransactionError",
    "__version__",
    "core_defaults",
    "drain_logs",
    "log_fd",
    "log_rate_limit",
    "parse_listen",
    "parse_uri",
    "set_log_level",
]

__version__: str

class SiprError(Exception): ...
class TransactionError(SiprError): ...

@final
class URI:
    @property
    def scheme(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def headers(self) -> str | None: ...
    def __new__(cls, uri: str) -> URI: ...
    @property
    def params(self) -> list[tuple[str, str]]: ...
    def param(self, name: str) -> str | None: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Address:
    @property
    def uri(self) -> URI: ...
    @property
    def display(self) -> str | None: ...
    @property
    def tag(self) -> str | None: ...
    def param(self, name: str) -> str | None: ...

@final
class CSeq:
    @property
    def number(self) -> int: ...
    @property
    def method(self) -> str: ...

@final
class Source:
    @property
    def transport(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...

@final
class Headers:
    def get(self, name: str, default: str | None = None) -> str | None: ...
    def getall(self, name: str) -> list[str]: ...
    def __getitem__(self, name: str, /) -> str: ...
    def __setitem__(self, name: str, value: object, /) -> None: ...
    def __delitem__(self, name: str, /) -> None: ...
    def __contains__(self, name: str, /) -> bool: ...
    def __len__(self) -> int: ...
    def items(self) -> list[tuple[str, str]]: ...
    def add(self, name: str, value: object) -> None: ...
    def set(self, name: str, value: object) -> None: ...
    def remove(self, name: str) -> None: ...

_HeadersArg = Mapping[str, object] | Iterable[tuple[str, object]] | None

@final
class Response:
    """The final answer a `relay()` resolved to."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def body(self) -> bytes: ...
    @property
    def raw(self) -> bytes: ...

class _Contact(Protocol):
    """A registered contact (`sipr.registrar.Contact`): relayed to its
    `next_hop` with Request-URI `uri`, through its `path`."""

    @property
    def uri(self) -> str: ...
    @property
    def next_hop(self) -> str: ...

_Target = URI | str | _Contact

@final
class Request:
    @property
    def method(self) -> str: ...
    @property
    def uri(self) -> URI: ...
    @uri.setter
    def uri(self, value: URI | str) -> None: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def from_(self) -> Address: ...
    @property
    def to(self) -> Address: ...
    @property
    def call_id(self) -> str: ...
    @property
    def cseq(self) -> CSeq: ...
    @property
    def body(self) -> bytes: ...
    @property
    def source(self) -> Source: ...
    @property
    def in_dialog(self) -> bool: ...
    @property
    def max_forwards(self) -> int | None: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def handled(self) -> bool: ...
    @property
    def deadline(self) -> float | None:
        """This request's route deadline in seconds (None: the app's)."""
    @deadline.setter
    def deadline(self, seconds: float | None) -> None: ...
    @property
    def _txn(self) -> int | None: ...
    def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: _HeadersArg = None,
        body: bytes | None = None,
    ) -> None: ...
    def forward(self, target: URI | str | None = None) -> bool: ...
    def relay(
        self,
        target: _Target | Sequence[_Target] | None = None,
        *,
        timeout: float | None = None,
        record_route: bool | None = None,
    ) -> asyncio.Future[Response | None]:
        """Relays statefully; the future resolves to the final response
        (None for an ACK, which is relayed statelessly and has none)."""
    def _finish(self) -> None: ...

class _AuthSpec(TypedDict):
    realm: str
    secret: bytes
    algorithms: list[str]
    nonce_ttl: float
    check_identity: bool
    ha1: Mapping[str, Mapping[str, str]]

#: A binding as the native location table holds it: (contact, expires_at, q,
#: call_id, cseq, received, path, user_agent, instance).
_BindingTuple = tuple[str, float, float, str, int, str | None, list[str], str | None, str | None]

@final
class Location:
    """The native location table behind the `memory:` store."""

    def __new__(cls) -> Location: ...
    def bindings(self, aor: str, now: float) -> list[_BindingTuple]: ...
    def update(self, aor: str, upsert: Sequence[_BindingTuple], delete: Sequence[str]) -> None: ...
    def remove(self, aor: str) -> int: ...
    def aors(self, now: float) -> list[str]: ...
    def __len__(self) -> int: ...

@final
class NonceCounts:
    """The highest nonce-count seen per digest nonce (bounded), against replays."""

    def __new__(cls, max: int) -> NonceCounts: ...
    def fresh(self, nonce: str, nc: int) -> bool: ...
    def __len__(self) -> int: ...

@final
class Core:
    def __new__(
        cls,
        listen: Sequence[str],
        *,
        max_pending: int | None = None,
        retry_after: int | None = None,
        max_message_size: int | None = None,
        aliases: Sequence[str] = ...,
        in_dialog_to_app: bool = False,
        record_route: bool = True,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_sni: Sequence[tuple[str, str, str]] = ...,
        tls_client_ca: str | None = None,
        tls_verify_client: bool = False,
        tls_verify_client_on: Sequence[str] = ...,
        tls_ca: str | None = None,
        connect_timeout: float | None = None,
        connection_lifetime: float | None = None,
        max_connections: int | None = None,
        udp_reader: str = "loop",
        resolvers: Sequence[str] = ...,
    ) -> Core: ...
    def dns(self) -> Dns: ...
    def udp_fds(self) -> list[int]: ...
    def wake_fd(self) -> int: ...
    def timer_fd(self) -> int: ...
    def poll_udp(self, index: int) -> list[Request]: ...
    def drain_streams(self) -> list[Request]: ...
    def on_timer(self) -> list[Request]: ...
    @property
    def has_cancelled(self) -> bool: ...
    def take_cancelled(self) -> list[int]: ...
    def local_addrs(self) -> list[tuple[str, str, int]]: ...
    @property
    def pending(self) -> int: ...
    def stats(self) -> list[tuple[str, int]]: ...
    def reset_stats(self) -> None: ...
    def dns_cache(self) -> list[tuple[str, int, str, int]]: ...
    def set_timers(
        self,
        *,
        t1: float | None = None,
        t2: float | None = None,
        t4: float | None = None,
        timer_c: float | None = None,
    ) -> None: ...
    def timers(self) -> tuple[float, float, float, float]: ...
    @property
    def max_pending(self) -> int: ...
    @max_pending.setter
    def max_pending(self, n: int) -> None: ...
    @property
    def retry_after(self) -> int: ...
    @retry_after.setter
    def retry_after(self, seconds: int) -> None: ...
    def set_in_dialog_to_app(self, on: bool) -> None: ...
    def start_drain(self) -> None: ...
    @property
    def draining(self) -> bool: ...
    def open_transactions(self) -> tuple[int, int]: ...
    def reload_tls(self) -> None: ...
    def tls_info(self) -> _TlsInfo: ...
    def stop(self) -> None: ...
    def serve_registrar(
        self,
        location: Location,
        *,
        domains: Sequence[str] | None,
        min_expires: int,
        max_expires: int,
        default_expires: int,
        max_contacts: int,
        auth: _AuthSpec | None = None,
        nonce_counts: NonceCounts | None = None,
    ) -> None: ...

class _Certificate(TypedDict):
    domain: str | None
    subject: str
    issuer: str
    names: list[str]
    not_after: int
    path: str

class _TlsInfo(TypedDict):
    listeners: list[tuple[str, int]]
    certificates: list[_Certificate]

class _CoreDefaults(TypedDict):
    max_pending: int
    retry_after: int
    max_message_size: int
    connect_timeout: float
    connection_lifetime: float
    max_connections: int
    t1: float
    t2: float
    t4: float
    timer_c: float

@final
class Dns:
    """The core's RFC 3263 cache, destination blocklist and their settings."""

    blocklist_time: float
    failover_timeout: float
    def entries(self) -> list[dict[str, Any]]: ...
    def flush(self, host: str | None = None) -> int: ...
    def blocklist(self) -> list[tuple[str, str, float, str, int]]: ...
    def unblock(self, address: str | None = None) -> int: ...
    def stats(self) -> list[tuple[str, int]]: ...
    def nameservers(self) -> list[str]: ...

@final
class Serial:
    """Relay targets tried one after another (failover on `codes`)."""

    def __new__(cls, targets: Iterable[object], *, codes: list[int] | None = None) -> Serial: ...
    @property
    def targets(self) -> list[str]: ...
    @property
    def codes(self) -> list[int]: ...
    def __len__(self) -> int: ...

@final
class Selection:
    """A dispatcher selection, evaluated by `Request.relay()` for its request."""

    @property
    def set(self) -> int: ...

@final
class Dispatcher:
    """The native half of `sipr.Dispatcher`."""

    def __init__(self) -> None: ...
    def load(self, rows: list[tuple[int, str, int, int, str]]) -> int: ...
    @staticmethod
    def parse_list(text: str) -> list[tuple[int, str, int, int, str]]: ...
    def select(self, req: Request, set: int, algo: str = "round-robin") -> list[str]: ...
    def targets(
        self,
        set: int,
        algo: str = "round-robin",
        *,
        limit: int | None = None,
        codes: list[int] | None = None,
    ) -> Selection: ...
    def list(self) -> list[dict[str, Any]]: ...
    def set_state(self, uri: str, state: str, set: int | None = None) -> int: ...
    def start_probing(
        self,
        dns: Dns,
        *,
        interval: float,
        timeout: float,
        fail_threshold: int,
        ok_threshold: int,
        alive_codes: builtins.list[int],
        from_uri: str,
    ) -> None: ...
    def stop_probing(self) -> None: ...
    @property
    def probing(self) -> bool: ...
    def counters(self) -> tuple[int, int]: ...

def parse_uri(uri: str) -> URI: ...
def parse_listen(spec: str) -> tuple[str, str, int]: ...
def core_defaults() -> _CoreDefaults:
    """The Rust core's default settings (rust/src/python/defaults.rs)."""

def log_fd() -> int:
    """Installs the tracing → logging bridge; the eventfd readable when
    core log records wait (rust/src/python/logbridge.rs)."""

def drain_logs() -> tuple[list[tuple[int, str, str, str | None]], int]:
    """Waiting core log records: (logging level, logger name, message,
    Call-ID), and how many were suppressed since the last call."""

def log_rate_limit() -> int:
    """Core log records a second that pass the rate limit."""

def set_log_level(level: int) -> None:
    """Passes core events at this Python `logging` level and above."""
