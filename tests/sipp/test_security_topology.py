"""Issue 17 acceptance 5: topology hiding (topos-like, stored state).
SIPp UAC (127.0.0.2) -> sipr (127.0.0.1) -> SIPp UAS (127.0.0.5): neither
side sees the other's address or port in any header, checked on the wire
(-trace_msg); re-INVITEs from both sides and the BYE from either side
complete; and with the dialogs in SQLite (or Redis) a BYE after a restart
of sipr still routes, in both directions."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import free_port, header, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.peers import Sipp
from tests.sipp.regkit import RedisServer
from tests.sipp.securitykit import SCENARIOS, start, wait_for

CALLER, CALLEE = "127.0.0.2", "127.0.0.5"


def render(name: str, keep: str, dest: Path) -> str:
    """SCENARIO with only the BYE block `keep` (UAC_BYE or UAS_BYE)."""
    drop = "UAS_BYE" if keep == "UAC_BYE" else "UAC_BYE"
    text = (SCENARIOS / name).read_text()
    text = re.sub(rf"<!--{drop}-->.*?<!--/{drop}-->", "", text, flags=re.S)
    out = dest / f"{keep}-{name}"
    out.write_text(text)
    return str(out)


def received_headers(sipp: Sipp) -> list[str]:
    """The header sections of every message this SIPp received."""
    log = next(sipp.workdir.glob("*_messages.log")).read_text(errors="replace")
    out = []
    for block in log.split("-" * 47):
        if "message received" in block:
            msg = block.split(":\n\n", 1)[-1].lstrip("\n")
            out.append(msg.split("\n\n", 1)[0])
    return out


@pytest.mark.parametrize("bye_from", ["UAC_BYE", "UAS_BYE"])
def test_neither_side_sees_the_other(sipp: str, sipr_factory, tmp_path, bye_from) -> None:
    uas_port, uac_port, calls = free_port(), free_port(), 3
    sipr = start(
        sipr_factory,
        {"topology": f"sqlite:///{tmp_path}/topos.db", "target": f"sip:{CALLEE}:{uas_port}"},
    )
    uas = Sipp(
        sipp, render("topo_uas.xml", bye_from, tmp_path), uas_port, calls=calls, timeout_s=40,
        extra=("-i", CALLEE, "-trace_msg"),
    )  # fmt: skip
    uac = Sipp(
        sipp, render("topo_uac.xml", bye_from, tmp_path), uac_port, calls=calls, rate=5,
        remote=sipr.udp, timeout_s=40, extra=("-i", CALLER, "-trace_msg"),
    )  # fmt: skip
    try:
        caller, callee = uac.wait(), uas.wait()
    finally:
        uac.kill()
        uas.kill()
    assert caller.successful == calls and caller.failed == 0, caller.summary()
    assert callee.successful == calls and callee.failed == 0, callee.summary()
    at_uas, at_uac = received_headers(uas), received_headers(uac)
    # INVITE, ACK, re-INVITE, ACK, the 200 to its re-INVITE and BYE or its 200.
    assert len(at_uas) >= 6 * calls and len(at_uac) >= 6 * calls
    for head in at_uas:
        assert CALLER not in head and f":{uac_port}" not in head, head
        assert head.lower().count("\nvia:") <= 1 or head.startswith("SIP/2.0"), head
        assert "record-route" not in head.lower(), head
    for head in at_uac:
        assert CALLEE not in head and f":{uas_port}" not in head, head
    s = rpc(sipr.ctl, "stats.get", "security.topology")
    # Per call: ACK, re-INVITE, ACK, re-INVITE, ACK, BYE by token.
    assert s["security.topology.routed"] == 6 * calls, s
    assert s["security.topology.unknown"] == 0


class UA:
    """A bare UDP UA for the restart test: sends requests to sipr, answers
    what arrives, keeps the dialog state (remote target, tags, CSeq)."""

    def __init__(self, host: str, sipr: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()
        self.sipr = sipr
        self.cseq = 10

    def contact(self) -> str:
        return f"<sip:ua@{self.host}:{self.port}>"

    def send(self, text: str) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), self.sipr)

    def recv(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def request(self, method: str, ruri: str, call_id: str, local: str, remote: str) -> str:
        """`local` / `remote`: the From / To values (with tags)."""
        self.cseq += 1
        branch = "z9hG4bK" + os.urandom(6).hex()
        self.send(
            f"{method} {ruri} SIP/2.0\nVia: SIP/2.0/UDP {self.host}:{self.port};branch={branch}\n"
            f"From: {local}\nTo: {remote}\nCall-ID: {call_id}\nCSeq: {self.cseq} {method}\n"
            f"Contact: {self.contact()}\nMax-Forwards: 70\nContent-Length: 0\n\n"
        )
        return branch

    def final(self, branch: str) -> bytes:
        while True:
            data = self.recv()
            if branch.encode() in data and (status_of(data) or 0) >= 200:
                return data

    def answer(self, req: bytes, status: int = 200, to_tag: str | None = None) -> None:
        head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        names = ("via", "from", "call-id", "cseq")
        keep = [ln for ln in head[1:] if ln.split(":")[0].lower() in names]
        to = header(req, "To") or ""
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        lines = [f"SIP/2.0 {status} OK", *keep, f"To: {to}", f"Contact: {self.contact()}"]
        self.send("\n".join(lines) + "\nContent-Length: 0\n\n")

    def close(self) -> None:
        self.sock.close()


def uri_of(value: str) -> str:
    return value.split("<", 1)[1].split(">", 1)[0]


def establish(caller: UA, callee: UA, n: int) -> dict[str, str]:
    """A call caller -> sipr -> callee; returns what each side keeps."""
    a_tag, call_id = f"a{n}", f"call-{n}@{caller.host}"
    local = f"<sip:alice@example.com>;tag={a_tag}"
    remote = "<sip:bob@example.com>"
    branch = caller.request("INVITE", f"sip:bob@{caller.sipr[0]}:{caller.sipr[1]}", call_id,
                            local, remote)  # fmt: skip
    invite = callee.recv()
    assert invite.startswith(b"INVITE"), invite
    b_call_id, b_from = header(invite, "Call-ID"), header(invite, "From")
    assert b_call_id != call_id and caller.host.encode() not in invite
    callee.answer(invite, 200, to_tag=f"b{n}")
    ok = caller.final(branch)
    assert status_of(ok) == 200 and callee.host.encode() not in ok, ok
    to_with_tag = header(ok, "To")
    a_target = uri_of(header(ok, "Contact") or "")
    caller.request("ACK", a_target, call_id, local, to_with_tag or "")
    assert callee.recv().startswith(b"ACK")
    return {
        "call_id": call_id, "local": local, "remote": to_with_tag or "", "a_target": a_target,
        "b_call_id": b_call_id or "", "b_local": to_with_tag or "", "b_remote": b_from or "",
        "b_target": uri_of(header(invite, "Contact") or ""),
    }  # fmt: skip


def bye(sender: UA, receiver: UA, target: str, call_id: str, local: str, remote: str) -> bytes:
    branch = sender.request("BYE", target, call_id, local, remote)
    got = receiver.recv()
    assert got.startswith(b"BYE"), got
    receiver.answer(got, 200)
    return sender.final(branch)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_bye_after_a_restart_still_routes(sipr_factory, tmp_path, store) -> None:
    redis = RedisServer() if store == "redis" else None
    url = redis.url() if redis else f"sqlite:///{tmp_path}/topos.db"
    port = free_port()
    listen = (f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}")
    config = {"topology": url, "target": "sip:127.0.0.1:9"}
    caller, callee = UA(CALLER, ("127.0.0.1", port)), UA(CALLEE, ("127.0.0.1", port))
    try:
        config["target"] = f"sip:{CALLEE}:{callee.port}"
        first = start(sipr_factory, config, listen=listen)
        one, two = establish(caller, callee, 1), establish(caller, callee, 2)
        wait_for(lambda: len(rpc(first.ctl, "topos.list")) == 2, 5, "two hidden dialogs")
        assert first.stop() == 0, first.log()[-2000:]
        second = start(sipr_factory, config, listen=listen)
        assert second.proc.pid != first.proc.pid
        assert len(rpc(second.ctl, "topos.list")) == 2
        # The caller hangs up call one, the callee call two: both still route.
        done = bye(caller, callee, one["a_target"], one["call_id"], one["local"], one["remote"])
        assert status_of(done) == 200, done
        done = bye(callee, caller, two["b_target"], two["b_call_id"], two["b_local"],
                   two["b_remote"])  # fmt: skip
        assert status_of(done) == 200 and header(done, "Call-ID") == two["b_call_id"], done
        s = rpc(second.ctl, "stats.get", "security.topology")
        assert s["security.topology.routed"] == 2 and s["security.topology.unknown"] == 0
        # An unknown dialog token gets 481.
        stale = one["a_target"].replace("sr-b-", "sr-b-0")
        branch = caller.request("BYE", stale, "x", "<sip:a@b>;tag=1", "<sip:c@d>;tag=2")
        assert status_of(caller.final(branch)) == 481
    finally:
        caller.close()
        callee.close()
        if redis is not None:
            redis.stop()
