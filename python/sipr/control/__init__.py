"""The control plane: a JSON-RPC 2.0 server in the serving loop, on a Unix
socket (`sipr ctl`) and optionally on HTTP (`/rpc`, `/metrics`, the status
page). See docs/operations.md."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipr.control.rpc import Registry


class ControlError(Exception):
    """The control interface cannot start (socket in use, unsafe HTTP bind)."""


@dataclass(frozen=True)
class ControlConfig:
    #: The Unix socket path, or None for no socket (or for the per-instance
    #: default, with `default_socket`).
    ctl_socket: Path | None
    #: (host, port) of the HTTP listener, or None.
    http: tuple[str, int] | None = None
    http_token: str | None = None
    #: No path given: a socket in the run directory named after the first
    #: listener (`sipr.paths.instance_ctl_socket`), so instances with
    #: different listeners coexist under one account.
    default_socket: bool = False


def parse_http_bind(spec: str, token: str | None) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT`) → (host, port); a bind beyond loopback needs a token."""
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ControlError(f"--http {spec}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise ControlError(
            f"--http {spec} is not a loopback address: set --http-token (or SIPR_HTTP_TOKEN)"
        )
    return host, int(port)


class ControlServer:
    """Owns the registry and the listeners for one running `Server`."""

    def __init__(self, server: Any, config: ControlConfig) -> None:
        from sipr.control.commands import register_builtins

        self.server = server
        self.config = config
        self.started = time.monotonic()
        self.registry = Registry(lambda: server.app.rpc_methods)
        register_builtins(self.registry, self)
        self.listeners: list[Any] = []

    async def start(self) -> None:
        from sipr import _lifecycle
        from sipr.control.http import HttpListener
        from sipr.control.unix import UnixListener
        from sipr.paths import instance_ctl_socket

        path = self.config.ctl_socket
        if path is None and self.config.default_socket:
            path = instance_ctl_socket(self.server.core.local_addrs()[0])
        try:
            if path is not None:
                unix = UnixListener(self.registry, path)
                await unix.start()
                self.listeners.append(unix)
                _lifecycle.announce(f"sipr: control socket {path}")
            if self.config.http is not None:
                host, port = self.config.http
                http = HttpListener(self, host, port, self.config.http_token)
                await http.start()
                self.listeners.append(http)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for listener in reversed(self.listeners):
            await listener.stop()
        self.listeners.clear()
