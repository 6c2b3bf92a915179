"""Helpers for the security acceptance tests (issue 17): sipr running
tests/apps/security_app.py with a JSON configuration, SIPp from any
127.0.0.x address, the control socket, and raw SIP over UDP from a chosen
source address."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, sip_request, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.peers import Sipp

APP = ROOT / "tests" / "apps" / "security_app.py"
SCENARIOS = Path(__file__).resolve().parent / "scenarios_security"


def start(sipr_factory, config: dict[str, Any], **kwargs: Any):  # type: ignore[no-untyped-def]
    """sipr with tests/apps/security_app.py configured by `config`."""
    env = {"SIPR_SECURITY": json.dumps(config), **kwargs.pop("env", {})}
    return sipr_factory(APP, env=env, **kwargs)


def sipp_at(
    sipp: str, scenario: str, local_ip: str, *, port: int | None = None, **kwargs: Any
) -> Sipp:
    """SIPp running scenarios_security/SCENARIO from `local_ip` (127.0.0.x)."""
    extra = ("-i", local_ip, *kwargs.pop("extra", ()))
    return Sipp(sipp, str(SCENARIOS / scenario), port or free_port(), extra=extra, **kwargs)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Polls `check` until it returns something true; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def bans(sipr: Any) -> dict[str, dict[str, Any]]:
    return {b["source"]: b for b in rpc(sipr.ctl, "ban.list")}


def stats(sipr: Any, prefix: str = "") -> dict[str, float]:
    return rpc(sipr.ctl, "stats.get", prefix)


class UdpFrom:
    """A UDP socket bound to `host` (a 127.0.0.x address) for raw SIP."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()

    def request(self, to: tuple[str, int], method: str = "OPTIONS", **kwargs: Any) -> bytes:
        kwargs.setdefault("via", f"SIP/2.0/UDP {self.host}:{{port}};branch=z9hG4bK{{branch}};rport")
        kwargs.setdefault("uri", f"sip:probe@{to[0]}:{to[1]}")
        data = sip_request(method, port=self.port, **kwargs)
        self.sock.sendto(data, to)
        return data

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None

    def ask(self, to: tuple[str, int], method: str = "OPTIONS", timeout: float = 2.0, **kw: Any):  # type: ignore[no-untyped-def]
        """Sends a request, returns the final status (None: no answer)."""
        self.request(to, method, **kw)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            status = status_of(data)
            if status is None or status >= 200:
                return status
        return None

    def close(self) -> None:
        self.sock.close()


def log_lines(sipr: Any, needle: str) -> list[str]:
    return [line for line in sipr.output if needle in line]


def process_load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
