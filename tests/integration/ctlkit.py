"""Clients of the control plane for the tests: JSON-RPC over the Unix socket
(newline-delimited), HTTP requests, and the `sipr ctl` command."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port
from tests.sipp.runner import Sipp

OPS_APP = ROOT / "tests" / "apps" / "ops_app.py"
SCENARIOS = ROOT / "tests" / "sipp" / "scenarios_ops"
_ids = itertools.count(1)


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def rpc(path: Path, method: str, *params: Any) -> Any:
    """One call over a fresh connection to the control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        req = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
        s.sendall(json.dumps(req).encode() + b"\n")
        with s.makefile("rb") as f:
            response = json.loads(f.readline())
    assert response["id"] == req["id"], response
    if "error" in response:
        raise RpcFault(response["error"]["code"], response["error"]["message"])
    return response["result"]


def http_request(
    addr: tuple[str, int],
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_rpc(addr: tuple[str, int], method: str, *params: Any, token: str | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    status, _, data = http_request(addr, "POST", "/rpc", body.encode(), token)
    assert status == 200, (status, data)
    response = json.loads(data)
    if "error" in response:
        raise RpcFault(response["error"]["code"], response["error"]["message"])
    return response["result"]


def sipr_ctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipr", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def register_users(sipp: str, proxy, users: int) -> int:  # type: ignore[no-untyped-def]
    """SIPp registers user1..userN@ops.test (one contact each) through
    `proxy`; returns SIPp's port (the contacts' port)."""
    port = free_port()
    reg = Sipp(sipp, str(SCENARIOS / "uac_register.xml"), port, calls=users,
               remote=proxy.udp, rate=50)  # fmt: skip
    r = reg.wait()
    assert (r.successful, r.failed) == (users, 0), r.summary()
    return port
