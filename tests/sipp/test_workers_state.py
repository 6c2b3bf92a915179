"""Shared state between `--workers` (issue 20, point 2): registrations in the
SQLite store shared in WAL mode, digest nonce-counts in one table, so what a
phone did through one worker holds on the other."""

from __future__ import annotations

import os
import re

from tests.conftest import ROOT, header, status_of
from tests.sipp.regkit import SipClient

APP = ROOT / "tests" / "apps" / "workers_app.py"


def worker_of(client: SipClient) -> int:
    """The pid of the worker this client's socket is hashed to."""
    resp = client.exchange(client.build("OPTIONS", f"sip:whoami@{client.server[0]}"))
    assert status_of(resp) == 200, resp
    return int(header(resp, "X-Worker-Pid") or 0)


def clients_on_two_workers(server: tuple[str, int], **kw) -> tuple[SipClient, SipClient]:
    """Two clients whose sockets the kernel hashes to different workers."""
    first = SipClient(server, **kw)
    first_pid = worker_of(first)
    for _ in range(64):
        other = SipClient(server, **kw)
        if worker_of(other) != first_pid:
            return first, other
        other.close()
    raise AssertionError("64 sockets all hashed to one worker")


def test_register_on_one_worker_call_and_replay_on_the_other(sipr_factory, tmp_path) -> None:
    store = f"sqlite://{tmp_path / 'location.db'}"
    s = sipr_factory(
        APP, env={"SIPR_STORE": store, "SIPR_AUTH": "1"}, extra_args=("--workers", "2")
    )
    alice, caller = clients_on_two_workers(s.udp, user="alice", auth=("alice", "alice"))
    try:
        assert status_of(alice.register(expires=60)) == 200
        # The same credentials again, as a new transaction, through the other
        # worker: the nonce-count was used on the first, so it is a replay.
        assert alice.last_authorized is not None
        replay = alice.last_authorized.data.decode()
        replay = re.sub(r"branch=z9hG4bK\w+", f"branch=z9hG4bK{os.urandom(6).hex()}", replay)
        replay = re.sub(r"CSeq: (\d+)", lambda m: f"CSeq: {int(m[1]) + 1}", replay)
        caller.sock.sendto(replay.encode(), s.udp)
        caller.sock.settimeout(5)
        resp = caller.sock.recv(65535)
        assert status_of(resp) == 403 and b"replayed" in resp.split(b"\r\n", 1)[0], resp
        # A call handled by the other worker reaches alice, registered on the first.
        sent = caller.build(
            "INVITE",
            "sip:alice@127.0.0.1",
            to="sip:alice@127.0.0.1",
            headers=[f"Contact: <sip:caller@127.0.0.1:{caller.port}>"],
        )
        caller.sock.sendto(sent.data, s.udp)
        invite = alice.recv_request(5.0)
        assert invite is not None and invite.startswith(b"INVITE sip:alice@127.0.0.1:"), invite
        # Answered per RFC 3261 §18.2.2, to the top Via: the private return
        # port of the worker that relayed it, which holds the client transaction.
        via = re.search(rb"Via: SIP/2.0/UDP ([\d.]+):(\d+)", invite)
        assert via is not None and int(via[2]) != s.udp[1], invite
        alice.server = (via[1].decode(), int(via[2]))
        alice.reply_to(invite, 486, "Busy Here")
        resp = caller.final(sent, timeout=5.0)
        assert status_of(resp) == 486, resp
        caller.ack(sent, "sip:alice@127.0.0.1", resp)
    finally:
        alice.close()
        caller.close()
    assert s.stop() == 0, s.log()
