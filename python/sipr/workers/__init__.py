"""`sipr run --workers N`: N worker processes, each with its own Python
interpreter and Rust core, on listeners a supervisor binds once and keeps
(docs/workers.md, docs/decisions/0050).

This module is what both sides share: the worker's spec handed down in the
environment, and how `--workers` is read."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Environment variable carrying a worker's spec (JSON) from the supervisor.
WORKER_ENV = "SIPR_WORKER"
#: Environment variable of a warm standby: every worker's spec (a JSON list);
#: the index it takes over arrives on its stdin.
STANDBY_ENV = "SIPR_WORKER_STANDBY"
#: Hex secret every worker signs digest nonces with (one nonce, any worker).
NONCE_SECRET_ENV = "SIPR_NONCE_SECRET"
#: Store URL where every worker keeps digest nonce-counts (a replay refused on all).
NONCE_STORE_ENV = "SIPR_NONCE_STORE"
#: Upper bound of `--workers`: each worker is a process with its own memory.
MAX_WORKERS = 256


class WorkersError(ValueError):
    """A bad `--workers` value."""


def worker_count(value: str) -> int:
    """`--workers N|auto` → N (auto: the cores this process may run on)."""
    text = value.strip().lower()
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(text)
    except ValueError:
        raise WorkersError(f"--workers must be a number or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise WorkersError(f"--workers must be 1 to {MAX_WORKERS} (or 'auto'), got {n}")
    return n


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells worker `index`: the listen URIs to serve
    (its private UDP return ports first, then the shared listeners) and, for
    each, the inherited socket descriptor."""

    index: int
    listen: list[str]
    fds: list[int]
    #: `sipr run` parameters (the supervisor's, with this worker's ctl socket).
    params: dict[str, Any]

    def encode(self) -> str:
        return json.dumps(
            {"index": self.index, "listen": self.listen, "fds": self.fds, "params": self.params}
        )

    @staticmethod
    def decode(text: str) -> WorkerSpec:
        raw = json.loads(text)
        return WorkerSpec(int(raw["index"]), list(raw["listen"]), list(raw["fds"]), raw["params"])


def listen_fds(listen: Sequence[str]) -> list[int | None]:
    """The inherited socket of each listen URI, when this process is a
    worker serving exactly the listeners its supervisor bound for it."""
    spec = current()
    if spec is None or list(listen) != spec.listen:
        return []
    return list(spec.fds)


def current() -> WorkerSpec | None:
    """This process's spec when it is a worker under a supervisor."""
    text = os.environ.get(WORKER_ENV)
    return WorkerSpec.decode(text) if text else None


def shared_nonce_secret() -> bytes | None:
    """The digest nonce secret the supervisor gave every worker (None outside `--workers`)."""
    text = os.environ.get(NONCE_SECRET_ENV)
    try:
        return bytes.fromhex(text) if text else None
    except ValueError:
        return None


def shared_nonce_store() -> str | None:
    """The store URL the supervisor gave every worker for nonce-counts."""
    return os.environ.get(NONCE_STORE_ENV) or None


#: This process's first UDP address while it serves ((host, port)); under
#: `--workers` the worker's private return port, so it names the worker.
_owner_addr: tuple[str, int] | None = None


def serving(core: Any) -> None:
    """Called once the core is bound: remembers where this process is reached."""
    global _owner_addr
    udp = [(h, p) for t, h, p in core.local_addrs() if t == "udp"]
    _owner_addr = udp[0] if udp else None


def owner_route(transport: str, host: str, port: int) -> str | None:
    """The Path value naming this process as the holder of a phone's
    connection (`transport`, `host`:`port`), for registrations other
    workers or hosts will look up (decision 0052); None without a UDP
    listener or for a datagram transport."""
    if _owner_addr is None or transport.lower() not in ("tcp", "tls", "ws", "wss"):
        return None
    me_host, me_port = _owner_addr
    me = f"[{me_host}]" if ":" in me_host else me_host
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"<sip:{me}:{me_port};lr;flow={peer};flow-transport={transport.lower()}>"


def is_own_route(value: str) -> bool:
    """Whether a Path value is one `owner_route` made for this process: a
    lookup here reaches the phone's connection directly."""
    if _owner_addr is None or "flow-transport=" not in value:
        return False
    me_host, me_port = _owner_addr
    me = f"[{me_host}]" if ":" in me_host else me_host
    return value.strip().startswith(f"<sip:{me}:{me_port};")
