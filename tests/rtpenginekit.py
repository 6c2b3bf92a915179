"""The real rtpengine daemon (Debian `rtpengine`) for the tests: userspace
mode (`--table=-1`) on 127.0.0.1, its ng control socket on a free port, a
small RTP port range, sessions dropped at once on delete (`--delete-delay=0`).
`RtpEngineProc.calls()` asks it (over ng) which calls it holds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from sipr.bencode import decode, encode
from tests.conftest import free_port, stop_process
from tests.natlab import in_netns


class RtpEngineProc:
    """`interface`: the address media is relayed on; `netns`: the network
    namespace it runs in (the NAT lab), where its control socket is asked."""

    def __init__(
        self,
        port_min: int,
        ng_port: int | None = None,
        *,
        interface: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        self.ng_port = ng_port or free_port()
        self.port_min = port_min
        self.interface = interface
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/rtpengine-{os.getpid()}-{self.ng_port}.log")

    @property
    def url(self) -> str:
        return f"udp:127.0.0.1:{self.ng_port}"

    def start(self, timeout: float = 10.0) -> RtpEngineProc:
        exe = shutil.which("rtpengine")
        assert exe, "rtpengine is not installed (scripts/install-deps: rtpengine-daemon)"
        args = [
            exe, "--table=-1", f"--interface={self.interface}",
            # Not /etc/rtpengine/rtpengine.conf: its CLI and HTTP ports would collide.
            "--config-file=none", f"--listen-ng=127.0.0.1:{self.ng_port}",
            "--foreground", "--log-stderr",
            f"--port-min={self.port_min}", f"--port-max={self.port_min + 199}",
            "--delete-delay=0", "--log-level=5", "--num-threads=1",
        ]  # fmt: skip
        if self.netns is not None:
            args = ["ip", "netns", "exec", self.netns, *args]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rtpengine did not start:\n{self.log.read_text()[-2000:]}")
        return self

    def command(self, params: dict[str, object], timeout: float = 1.0) -> dict[bytes, object]:
        if self.netns is not None:
            ns = self.netns
            return in_netns(ns, lambda: self._ask(params, timeout))
        return self._ask(params, timeout)

    def _ask(self, params: dict[str, object], timeout: float) -> dict[bytes, object]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            cookie = os.urandom(4).hex().encode()
            s.sendto(cookie + b" " + encode(params), ("127.0.0.1", self.ng_port))
            data = s.recv(65535)
        got, _, payload = data.partition(b" ")
        assert got == cookie
        out = decode(payload)
        assert isinstance(out, dict)
        return out

    def ping(self) -> bool:
        try:
            return self.command({"command": "ping"}, timeout=0.2).get(b"result") == b"pong"
        except OSError:
            return False

    def calls(self) -> list[str]:
        reply = self.command({"command": "list", "limit": 1000})
        return [c.decode() for c in reply.get(b"calls", [])]  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.log.unlink(missing_ok=True)
