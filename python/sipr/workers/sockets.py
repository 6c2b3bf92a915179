"""The sockets the supervisor binds once and every worker generation
inherits: per listen URI one SO_REUSEPORT socket per worker (the kernel
hashes a flow's 4-tuple onto one of them, so a peer's retransmissions and
CANCELs reach the worker holding its transaction), and per worker one
private UDP return port per UDP address, put first so the worker's Via and
Record-Route name it (decision 0050). Keeping them in the supervisor keeps
the reuseport group stable across a worker's restart: flows are not
rehashed and datagrams for a restarting worker wait in its socket."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

#: Receive/send buffers of UDP sockets (as the core sets on its own).
UDP_BUFFER_BYTES = 4 << 20
LISTEN_BACKLOG = 4096


@dataclass
class Listeners:
    #: (transport, host, port) of every shared listener, port 0 resolved.
    shared: list[tuple[str, str, int]] = field(default_factory=list)
    #: sockets[w] = worker w's sockets, in the order of `listen(w)`.
    sockets: list[list[socket.socket]] = field(default_factory=list)
    #: listen URIs per worker, aligned with `sockets[w]`.
    uris: list[list[str]] = field(default_factory=list)

    def fds(self, worker: int) -> list[int]:
        return [s.fileno() for s in self.sockets[worker]]

    def close(self) -> None:
        for group in self.sockets:
            for s in group:
                s.close()


def uri(transport: str, host: str, port: int) -> str:
    return f"{transport}:[{host}]:{port}" if ":" in host else f"{transport}:{host}:{port}"


def _socket(transport: str, host: str, port: int, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    s = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER_BYTES)
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(LISTEN_BACKLOG)
        s.setblocking(False)
    except OSError as e:
        s.close()
        reason = e.strerror or str(e)
        raise OSError(e.errno, f"cannot listen on {uri(transport, host, port)}: {reason}") from e
    return s


def bind(listen: list[tuple[str, str, int]], workers: int) -> Listeners:
    """Binds `workers` sockets per listen address (a port 0 is resolved by the
    first, the others join it) plus each worker's private UDP return ports."""
    out = Listeners(sockets=[[] for _ in range(workers)], uris=[[] for _ in range(workers)])
    try:
        shared: list[list[socket.socket]] = []
        for transport, host, port in listen:
            first = _socket(transport, host, port, reuseport=True)
            port = first.getsockname()[1]
            group = [first] + [
                _socket(transport, host, port, reuseport=True) for _ in range(workers - 1)
            ]
            shared.append(group)
            out.shared.append((transport, host, port))
        udp_hosts = list(dict.fromkeys(h for t, h, _ in listen if t == "udp"))
        for w in range(workers):
            for host in udp_hosts:
                private = _socket("udp", host, 0, reuseport=False)
                out.sockets[w].append(private)
                out.uris[w].append(uri("udp", host, private.getsockname()[1]))
            for (transport, host, port), group in zip(out.shared, shared, strict=True):
                out.sockets[w].append(group[w])
                out.uris[w].append(uri(transport, host, port))
    except BaseException:
        out.close()
        for group in shared:
            for s in group:
                s.close()
        raise
    return out
