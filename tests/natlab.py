"""A NAT lab in network namespaces (issue 15): a "public" segment with the
proxy and rtpengine, and home networks behind Linux NAT routers.

    core   br0 198.51.100.1/24 ─┬─ natN  pub 198.51.100.1N  (MASQUERADE)
    (sipr, rtpengine)            │        lan 192.168.1.1/24
                                 └─ uaN   eth0 192.168.1.10/24 (phones)

Every home network uses the same private addresses, as real ones do. The
NAT routers forget an idle UDP mapping after `udp_timeout` seconds
(conntrack). Processes run in a namespace with `ip netns exec`; the test
talks to sockets inside one through `in_netns` (a thread that entered it:
a socket stays in the namespace it was made in). Needs root (CAP_NET_ADMIN);
everything is removed by `close()`.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

PUBLIC_NET = "198.51.100"
PROXY_IP = f"{PUBLIC_NET}.1"
PHONE_IP = "192.168.1.10"
_CLONE_NEWNET = 0x40000000


def available() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces)"
    probe = f"srprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns unavailable: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Runs `fn` in a thread that entered network namespace `ns`."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({ns})")
            out.append(fn())
        except BaseException as e:  # handed to the caller
            err.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


class NatLab:
    def __init__(self, homes: int = 2, udp_timeout: int = 30) -> None:
        self.tag = f"sr{os.getpid() % 100000}"
        self.core = f"{self.tag}c"
        self.homes = homes
        self.udp_timeout = udp_timeout
        self.namespaces: list[str] = []

    def nat(self, n: int) -> str:
        return f"{self.tag}n{n}"

    def ua(self, n: int) -> str:
        return f"{self.tag}u{n}"

    def public_ip(self, n: int) -> str:
        """The address home `n`'s NAT router shows the world."""
        return f"{PUBLIC_NET}.{10 + n}"

    def sh(self, ns: str, *cmd: str) -> str:
        r = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"[{ns}] {' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout

    def _add(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.namespaces.append(ns)
        self.sh(ns, "ip", "link", "set", "lo", "up")

    def start(self) -> NatLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        self._add(self.core)
        self.sh(self.core, "ip", "link", "add", "br0", "type", "bridge")
        self.sh(self.core, "ip", "addr", "add", f"{PROXY_IP}/24", "dev", "br0")
        self.sh(self.core, "ip", "link", "set", "br0", "up")
        for n in range(1, self.homes + 1):
            nat, ua = self.nat(n), self.ua(n)
            self._add(nat)
            self._add(ua)
            self.sh(self.core, "ip", "link", "add", f"c{n}", "type", "veth", "peer", "name",
                    "pub", "netns", nat)  # fmt: skip
            self.sh(self.core, "ip", "link", "set", f"c{n}", "master", "br0", "up")
            self.sh(nat, "ip", "addr", "add", f"{self.public_ip(n)}/24", "dev", "pub")
            self.sh(nat, "ip", "link", "set", "pub", "up")
            self.sh(nat, "ip", "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                    "netns", ua)  # fmt: skip
            self.sh(nat, "ip", "addr", "add", "192.168.1.1/24", "dev", "lan")
            self.sh(nat, "ip", "link", "set", "lan", "up")
            self.sh(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.sh(nat, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "pub", "-j",
                    "MASQUERADE")  # fmt: skip
            # Conntrack's sysctls exist in the namespace once NAT uses it.
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                self.sh(nat, "sysctl", "-qw", f"net.netfilter.{key}={self.udp_timeout}")
            self.sh(ua, "ip", "addr", "add", f"{PHONE_IP}/24", "dev", "eth0")
            self.sh(ua, "ip", "link", "set", "eth0", "up")
            self.sh(ua, "ip", "route", "add", "default", "via", "192.168.1.1")
            # Counts the RTP each phone receives (baresip's rtp_ports).
            self.sh(ua, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "20000:40000", "-j",
                    "ACCEPT")  # fmt: skip

    def rtp_packets_in(self, n: int) -> int:
        """UDP packets home `n`'s phones received on their RTP ports."""
        out = self.sh(self.ua(n), "iptables", "-L", "INPUT", "-v", "-x", "-n")
        for line in out.splitlines():
            if "dpts:20000:40000" in line:
                return int(line.split()[0])
        raise AssertionError(f"no RTP counter in {self.ua(n)}:\n{out}")

    def mappings(self, n: int) -> list[str]:
        """Home `n`'s NAT router's UDP mappings (conntrack entries)."""
        try:
            out = self.sh(self.nat(n), "cat", "/proc/net/nf_conntrack")
        except RuntimeError:
            out = self.sh(self.nat(n), "conntrack", "-L", "-p", "udp")
        return [line for line in out.splitlines() if re.search(r"\budp\b", line)]

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
