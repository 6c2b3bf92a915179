"""A baresip softphone inside a network namespace of the NAT lab
(`tests/natlab.py`), driven over its ctrl_tcp module (netstring JSON) from
a socket made inside that namespace.

Audio comes from `ausine` and goes to `aubridge`, so a call carries real
G.711 RTP; there is no sound device. Events (`REGISTER_OK`,
`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`, ...) are queued and
awaited with `wait_event`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.natlab import in_netns

MODULES = Path("/usr/lib/baresip/modules")

_CONFIG = """\
poll_method		epoll
sip_listen		{ip}:{sip_port}
call_local_timeout	120
audio_player		aubridge,{name}
audio_source		ausine,440
ausrc_srate		48000
ausrc_channels		2
audio_alert		aubridge,{name}
net_interface		eth0
rtp_ports		{rtp_min}-{rtp_max}
module_path		{modules}
module			g711.so
module			ausine.so
module			aubridge.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
"""


class PhoneError(RuntimeError):
    pass


class NetPhone:
    """baresip as `user@domain` in namespace `ns` at `ip:sip_port`,
    registering through `proxy` (host, port) with registration interval
    `regint`; `answer`: "manual" or "auto"."""

    def __init__(
        self,
        ns: str,
        user: str,
        domain: str,
        *,
        proxy: tuple[str, int],
        workdir: Path,
        ip: str,
        sip_port: int = 5060,
        answer: str = "manual",
        regint: int = 600,
    ) -> None:
        self.ns, self.user, self.domain = ns, user, domain
        self.proxy, self.workdir, self.ip = proxy, Path(workdir), ip
        self.sip_port, self.answer, self.regint = sip_port, answer, regint
        self.ctrl_port = 4000 + sip_port % 1000
        self.aor = f"sip:{user}@{domain}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._log = None

    def start(self, timeout: float = 10.0) -> NetPhone:
        if shutil.which("baresip") is None:
            raise PhoneError("baresip is not installed (scripts/install-deps)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        rtp_min = 20000 + (self.sip_port % 100) * 100
        (self.workdir / "config").write_text(
            _CONFIG.format(
                ip=self.ip, sip_port=self.sip_port, name=f"{self.user}{self.sip_port}",
                rtp_min=rtp_min, rtp_max=rtp_min + 99, modules=MODULES,
                ctrl_port=self.ctrl_port,
            )
        )  # fmt: skip
        (self.workdir / "accounts").write_text("")
        (self.workdir / "contacts").write_text("")
        self._log = open(self.workdir / "trace.log", "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "baresip", "-f", str(self.workdir), "-s"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while self._sock is None:
            if self.proc.poll() is not None:
                raise PhoneError(f"baresip exited ({self.proc.returncode}):\n{self.trace()}")
            try:
                self._sock = in_netns(
                    self.ns,
                    lambda: socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1),
                )
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PhoneError(f"baresip control port not up in {timeout}s") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        outbound = f"sip:{self.proxy[0]}:{self.proxy[1]};transport=udp"
        self.command(
            "uanew",
            f'<{self.aor};transport=udp>;auth_pass=x;outbound="{outbound}"'
            f";regint={self.regint};answermode={self.answer}",
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self._send({"command": "quit", "params": "", "token": "quit"})
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._sock is not None:
            self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout)
        if self._log is not None:
            self._log.close()

    def trace(self) -> str:
        path = self.workdir / "trace.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- control ------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        assert self._sock is not None
        data = json.dumps(obj).encode()
        self._sock.sendall(b"%d:%s," % (len(data), data))

    def command(self, name: str, params: str = "") -> None:
        self._send({"command": name, "params": params, "token": name})

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                head, colon, rest = buf.partition(b":")
                if not colon or not head.isdigit() or len(rest) < int(head) + 1:
                    break
                n = int(head)
                payload, buf = rest[:n], rest[n + 1 :]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if msg.get("event"):
                    with self._cond:
                        self._events.append(msg)
                        self._cond.notify_all()

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next queued event of type `kind` (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, e in enumerate(self._events):
                    if e.get("type") == kind:
                        del self._events[: i + 1]
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") for e in self._events]
                    raise PhoneError(f"{self.user}: no {kind} in {timeout}s (saw {seen})")
                self._cond.wait(left)

    def seen(self, kind: str) -> bool:
        with self._cond:
            return any(e.get("type") == kind for e in self._events)

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")
