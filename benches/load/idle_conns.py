#!/usr/bin/env python3
"""Memory per idle TCP and TLS connection of a proxy (sipr or Kamailio).

    idle_conns.py sipr|kamailio CERTDIR [-n 2000]

Starts proxy B of tls_pair.sh alone (TLS 127.0.0.1:5081, TCP 127.0.0.1:5082), and per
transport, in a fresh proxy: opens N connections (TLS: full handshake, verifying the proxy
against CERTDIR/ca.pem), sends a CRLF keep-alive ping on each and waits for its pong (so the
proxy has set the connection up), then reads the proxy's memory again. Prints the delta per
connection of the PSS summed over the proxy's process tree (Kamailio is several processes
sharing memory: PSS counts shared pages once) and of the RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORTS = {"tls": 5081, "tcp": 5082}


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory_kb(root: int) -> tuple[int, int]:
    """(PSS, RSS) in kB summed over the process tree of `root`."""
    pss = rss = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return pss, rss


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"proxy did not listen on {port}")


def open_idle(transport: str, n: int, ca: Path) -> list[socket.socket]:
    ctx = None
    if transport == "tls":
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False
    conns: list[socket.socket] = []
    for _ in range(n):
        s: socket.socket = socket.create_connection(("127.0.0.1", PORTS[transport]), timeout=10)
        if ctx is not None:
            s = ctx.wrap_socket(s)
        s.sendall(b"\r\n\r\n")
        if s.recv(16) != b"\r\n":
            raise SystemExit(f"{transport}: no keep-alive pong")
        conns.append(s)
    return conns


def measure(kind: str, certs: Path, transport: str, n: int) -> tuple[float, float]:
    proc = subprocess.Popen(
        [str(HERE / "tls_pair.sh"), kind, str(certs), "B"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(PORTS["tcp"])
        # One connection first: first-use allocations are not per connection.
        warm = open_idle(transport, 1, certs / "ca.pem")
        time.sleep(1.0)
        pss0, rss0 = memory_kb(proc.pid)
        conns = open_idle(transport, n, certs / "ca.pem")
        time.sleep(2.0)
        pss1, rss1 = memory_kb(proc.pid)
        for s in conns + warm:
            s.close()
        return (pss1 - pss0) / n, (rss1 - rss0) / n
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("proxy", choices=("sipr", "kamailio"))
    ap.add_argument("certs", type=Path)
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.n + 100)), hard))
    for transport in ("tcp", "tls"):
        pss, rss = measure(args.proxy, args.certs, transport, args.n)
        print(
            f"{args.proxy}\t{transport}\tn={args.n}\tPSS {pss:.1f} kB/conn\tRSS {rss:.1f} kB/conn"
        )


if __name__ == "__main__":
    main()
