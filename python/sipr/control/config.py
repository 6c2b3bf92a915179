"""The control plane's errors and listener addresses (no other sipr imports:
every control module may use it)."""

from __future__ import annotations

import ipaddress


class ControlError(Exception):
    """The control interface cannot start (socket in use, unsafe HTTP bind)."""


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
