"""Real softphones for end-to-end tests: baresip (Debian `baresip-core`)
driven over its ctrl_tcp module.

    with Baresip("alice", "secret", registrar=pbx.udp, workdir=tmp_path / "alice") as alice:
        alice.wait_event("REGISTER_OK")
        alice.dial("sip:bob@127.0.0.1")
        alice.wait_event("CALL_ESTABLISHED")
        alice.hangup()

Each phone runs in its own config directory (`workdir`) with no sound device:
audio comes from `ausine` (a 440 Hz tone) and is played into `aubridge`, so
calls carry real G.711 RTP. The account is created after the control
connection is up (`uanew`), so no event is missed, not even the first
REGISTER's. Events (`REGISTER_OK`, `REGISTER_FAIL`, `CALL_INCOMING`,
`CALL_ESTABLISHED`, `CALL_CLOSED`, ...) are queued and awaited with
`wait_event`; `-s` SIP tracing goes to `trace()` and `sip_messages()` (awaited
with `wait_sip`), to check what went over the wire. `stop()` quits baresip
(killed if it does not exit) and is idempotent.
Only 127.0.0.1 is used: SIP, RTP and the control port.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODULES = Path("/usr/lib/baresip/modules")

_CONFIG = """\
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
call_local_timeout	120
audio_player		aubridge,{name}
audio_source		ausine,440
ausrc_srate		48000
ausrc_channels		2
audio_alert		aubridge,{name}
net_interface		127.0.0.1
rtp_ports		20000-40000
module_path		{modules}
module			g711.so
module			ausine.so
module			aubridge.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
"""


class BaresipError(RuntimeError):
    """baresip refused a command, exited, or an awaited event did not come."""


def _bindable(port: int, kind: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _free_port(kind: int, span: int = 1) -> int:
    """A port P on 127.0.0.1 with P .. P+span-1 free for UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span > 65536:
            continue
        if all(
            _bindable(p, k)
            for p in range(port, port + span)
            for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ):
            return port
    raise BaresipError("no free port")


class Baresip:
    """One baresip softphone registered as `user` at `registrar` (host, port).

    `transport` is "udp" or "tcp". `domain` is the host of the AoR
    (sip:USER@DOMAIN). `answer` is baresip's answermode: "manual" (call
    `accept()` on CALL_INCOMING) or "auto". `regint` is the registration
    interval asked for, in seconds.
    """

    def __init__(
        self,
        user: str,
        password: str,
        *,
        registrar: tuple[str, int],
        workdir: Path,
        transport: str = "udp",
        domain: str = "127.0.0.1",
        answer: str = "manual",
        regint: int = 600,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, got {transport!r}")
        self.user, self.password = user, password
        self.registrar, self.transport, self.domain = registrar, transport, domain
        self.answer, self.regint = answer, regint
        self.workdir = Path(workdir)
        self.aor = f"sip:{user}@{domain}"
        self.sip_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._tokens = iter(range(1, 1 << 30))
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Baresip:
        """Starts baresip, connects to its control port and creates the
        account (which starts registering)."""
        if shutil.which("baresip") is None:
            raise BaresipError("baresip is not installed (scripts/install-deps)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        ctrl_port = self._choose_ports()
        (self.workdir / "config").write_text(self._config(ctrl_port))
        (self.workdir / "accounts").write_text("")
        (self.workdir / "contacts").write_text("")
        self._trace = open(self.workdir / "trace.log", "wb")
        self.proc = subprocess.Popen(
            [*self._launcher(), "baresip", "-f", str(self.workdir), "-s"],
            stdin=subprocess.DEVNULL, stdout=self._trace, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while self._sock is None:
            if self.proc.poll() is not None:
                raise BaresipError(f"baresip exited ({self.proc.returncode}):\n{self.trace()}")
            try:
                self._sock = self._connect(ctrl_port)
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(f"baresip control port not up in {timeout}s") from None
                time.sleep(0.05)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        uri = f"<{self.aor};transport={self.transport}>"
        outbound = f"sip:{self.registrar[0]}:{self.registrar[1]};transport={self.transport}"
        self.command(
            "uanew",
            f'{uri};auth_pass={self.password};outbound="{outbound}";regint={self.regint}'
            f";answermode={self.answer}",
        )
        return self

    # -- what a phone elsewhere (tests/netphone.py) does differently ------
    def _choose_ports(self) -> int:
        """Sets `sip_port`; returns the control port."""
        # SIP on UDP and TCP at sip_port, and TLS at sip_port + 1 (baresip
        # always opens it).
        self.sip_port = _free_port(socket.SOCK_DGRAM, span=2)
        ctrl_port = self.sip_port
        while ctrl_port in (self.sip_port, self.sip_port + 1):  # ports come in sequence
            ctrl_port = _free_port(socket.SOCK_STREAM)
        return ctrl_port

    def _config(self, ctrl_port: int) -> str:
        return _CONFIG.format(
            sip_port=self.sip_port,
            name=f"{self.user}{self.sip_port}",
            modules=MODULES,
            ctrl_port=ctrl_port,
        )

    def _launcher(self) -> list[str]:
        """What baresip's command line is prefixed with."""
        return []

    def _connect(self, ctrl_port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", ctrl_port), timeout=1)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Quits baresip (SIGKILL if it does not exit in `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self._sock is not None:
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
        self._trace.close()
        return self.proc.returncode

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control --------------------------------------------------------
    def command(self, command: str, params: str = "", timeout: float = 5.0) -> str:
        """Runs a baresip command (as typed in its console, long form) and
        returns its output; raises BaresipError when refused."""
        token = str(next(self._tokens))
        self._send({"command": command, "params": params, "token": token})
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout):
                raise BaresipError(f"no answer to {command!r} in {timeout}s")
            resp = self._responses.pop(token)
        if not resp.get("ok"):
            raise BaresipError(f"{command} {params}: {resp.get('data')}")
        return str(resp.get("data", ""))

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")

    def wait_event(
        self, kind: str, timeout: float = 10.0, since: int = 0, **match: str
    ) -> dict[str, Any]:
        """The first event of type `kind` (e.g. "REGISTER_OK") at or after
        index `since` whose fields equal `match`; raises BaresipError after
        `timeout` seconds. Events stay recorded (see `events`)."""

        def found() -> dict[str, Any] | None:
            for e in self._events[since:]:
                if e.get("type") == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        with self._cond:
            event = self._cond.wait_for(found, timeout)
        if event is None:
            raise BaresipError(
                f"{self.user}: no {kind} within {timeout}s; events: "
                f"{[e.get('type') for e in self.events]}\n{self.trace()[-4000:]}"
            )
        return event

    def seen(self, kind: str, since: int = 0) -> bool:
        """Whether an event of type `kind` came at or after index `since`."""
        with self._cond:
            return any(e.get("type") == kind for e in self._events[since:])

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def trace(self) -> str:
        """What baresip printed: its log and, with `-s`, every SIP message."""
        try:
            return (self.workdir / "trace.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_sip(
        self, pred: Callable[[str, str, str], bool], what: str, timeout: float = 10.0
    ) -> tuple[str, str, str]:
        """The first traced SIP message (from, to, text) for which `pred`
        holds, waiting up to `timeout` s for it (baresip writes its trace as
        it goes; there is no event for "a message was received")."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.sip_messages():
                if pred(*m):
                    return m
            if time.monotonic() > deadline:
                raise BaresipError(f"{self.user}: {what} not seen in {timeout}s:\n{self.trace()}")
            time.sleep(0.05)

    def sip_messages(self) -> list[tuple[str, str, str]]:
        """The SIP messages of the trace as (from, to, text): `from` and `to`
        are "IP:PORT", `text` the message (start line first)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.trace())
        out = []
        for block in re.split(r"(?m)^#$", text)[1:]:
            m = re.match(r"\s*(?:UDP|TCP|TLS) (\S+) -> (\S+)\n", block)
            if m:
                out.append((m.group(1), m.group(2), block[m.end() :].strip()))
        return out

    # -- wire -----------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        assert self._sock is not None
        data = json.dumps(obj).encode()
        # The reader thread made the socket blocking (no timeout): a baresip
        # that stopped reading would hold sendall forever without this.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 10, 0))
        self._sock.sendall(f"{len(data)}:".encode() + data + b",")

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        sock.settimeout(None)
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += chunk
            while True:
                head, colon, rest = buf.partition(b":")
                if not colon or not head.isdigit() or len(rest) < int(head) + 1:
                    break
                n = int(head)
                body, buf = rest[:n], rest[n + 1 :]
                try:
                    msg = json.loads(body)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("event"):
                        self._events.append(msg)
                    elif msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    self._cond.notify_all()
