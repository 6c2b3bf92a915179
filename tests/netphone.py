"""A baresip softphone inside a network namespace of the NAT lab
(`tests/natlab.py`): `tests/baresip.py`'s phone, started with
`ip netns exec` and driven over its ctrl_tcp module from a socket made
inside that namespace.

Audio comes from `ausine` and goes to `aubridge`, so a call carries real
G.711 RTP; there is no sound device. Events (`REGISTER_OK`,
`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`, ...) are awaited in
turn with `wait_event`: each wait consumes the events up to the one found.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tests.baresip import MODULES, Baresip
from tests.natlab import in_netns

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


class NetPhone(Baresip):
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
        super().__init__(
            user, "x", registrar=proxy, workdir=workdir, domain=domain, answer=answer,
            regint=regint,
        )  # fmt: skip
        self.ns, self.ip, self.proxy = ns, ip, proxy
        self.fixed_sip_port = sip_port
        self._consumed = 0  # events before this index were waited past

    def _choose_ports(self) -> int:
        # Each phone has a namespace of its own: fixed ports do not collide.
        self.sip_port = self.fixed_sip_port
        return 4000 + self.sip_port % 1000

    def _config(self, ctrl_port: int) -> str:
        rtp_min = 20000 + (self.sip_port % 100) * 100
        return _CONFIG.format(
            ip=self.ip, sip_port=self.sip_port, name=f"{self.user}{self.sip_port}",
            rtp_min=rtp_min, rtp_max=rtp_min + 99, modules=MODULES, ctrl_port=ctrl_port,
        )  # fmt: skip

    def _launcher(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def _connect(self, ctrl_port: int) -> socket.socket:
        return in_netns(
            self.ns, lambda: socket.create_connection(("127.0.0.1", ctrl_port), timeout=1)
        )

    def wait_event(
        self, kind: str, timeout: float = 10.0, since: int | None = None, **match: str
    ) -> dict[str, Any]:
        """The next event of type `kind` after those already waited past
        (or from index `since`); the events up to it count as waited past."""
        start = self._consumed if since is None else since
        event = super().wait_event(kind, timeout, start, **match)
        with self._cond:
            self._consumed = next(i for i, e in enumerate(self._events) if e is event) + 1
        return event

    def seen(self, kind: str, since: int | None = None) -> bool:
        return super().seen(kind, self._consumed if since is None else since)
