"""Issue 17 acceptance 4: address groups (Kamailio `permissions`): a trunk
in group "carriers" is relayed without authentication, any other address is
challenged; reloading the rules (file or SQLite store) changes that at once,
without a restart, and a broken file is refused."""

from __future__ import annotations

import asyncio

from sipr.acl import save_rules
from tests.conftest import free_port, status_of
from tests.integration.ctlkit import RpcFault, rpc
from tests.sipp.peers import Sipp
from tests.sipp.securitykit import start
from tests.sipp.test_security_auth import client_at

TRUNK, OTHER = "127.0.0.8", "127.0.0.9"


def invite_status(host: str, server: tuple[str, int], headers: tuple[str, ...] = ()) -> int | None:
    """An INVITE from `host` (as alice, no credentials): its final status."""
    c = client_at(host, server, user="alice")
    try:
        return status_of(c.invite("sip:bob@sipr.test", list(headers)))
    finally:
        c.close()


def test_carriers_skip_auth_and_reload_changes_it(sipp: str, sipr_factory, tmp_path) -> None:
    rules = tmp_path / "address.txt"
    rules.write_text(f"# group  network  port  transport  tag\ncarriers {TRUNK} * udp trunk-1\n")
    uas_port = free_port()
    sipr = start(
        sipr_factory,
        {"trusted": [], "acl": str(rules), "target": f"sip:127.0.0.1:{uas_port}"},
    )
    busy = Sipp(sipp, "uas_busy.xml", uas_port, calls=3, timeout_s=30)
    try:
        # The trunk's INVITE reaches the UAS (its 486 comes back); the other
        # address gets a challenge.
        assert invite_status(TRUNK, sipr.udp) == 486
        assert invite_status(OTHER, sipr.udp) == 407
        # allow_address on another address than the source (AddressGroups.allows).
        assert invite_status(OTHER, sipr.udp, (f"X-Real-IP: {TRUNK}",)) == 486
        dump = rpc(sipr.ctl, "permissions.dump")
        assert dump == [
            {"group": "carriers", "network": f"{TRUNK}/32", "port": "*",
             "transport": "udp", "tag": "trunk-1"}
        ]  # fmt: skip
        check = rpc(sipr.ctl, "permissions.check", "carriers", TRUNK, 5060, "udp")
        assert check == {"group": "carriers", "allowed": True, "tag": "trunk-1"}
        pid = sipr.proc.pid
        # The trunk moves: the other address is the carrier now.
        rules.write_text(f"carriers {OTHER}/32 * *\n")
        assert rpc(sipr.ctl, "permissions.reload")["rules"] == 1
        assert invite_status(OTHER, sipr.udp) == 486
        assert invite_status(TRUNK, sipr.udp) == 407
        assert sipr.proc.pid == pid and sipr.alive()
        # A broken file is refused, naming the line; the rules stay.
        rules.write_text("carriers 10.0.0.0/8\ncarriers 300.1.1.1\n")
        try:
            rpc(sipr.ctl, "permissions.reload")
            raise AssertionError("a broken rules file was accepted")
        except RpcFault as e:
            assert "line 2" in e.message, e.message
        assert [r["network"] for r in rpc(sipr.ctl, "permissions.dump")] == [f"{OTHER}/32"]
        assert busy.wait().successful == 3
    finally:
        busy.kill()


def test_rules_from_the_store(sipr_factory, tmp_path) -> None:
    """The same rules kept in SQLite (`sipr.acl.save_rules`), reloaded."""
    url = f"sqlite:///{tmp_path}/acl.db"
    asyncio.run(save_rules(url, [("carriers", TRUNK, "*", "udp", "trunk-1")]))
    sipr = start(sipr_factory, {"trusted": [], "acl": url, "target": "sip:127.0.0.1:9"})
    assert rpc(sipr.ctl, "permissions.check", "carriers", TRUNK)["allowed"] is True
    assert rpc(sipr.ctl, "permissions.check", "carriers", OTHER)["allowed"] is False
    asyncio.run(save_rules(url, [("carriers", OTHER), ("pbx", "2001:db8::/32", 5060, "tcp")]))
    assert rpc(sipr.ctl, "permissions.reload")["rules"] == 2
    assert rpc(sipr.ctl, "permissions.check", "carriers", OTHER)["allowed"] is True
    assert rpc(sipr.ctl, "permissions.check", "carriers", TRUNK)["allowed"] is False
    assert rpc(sipr.ctl, "permissions.check", "pbx", "2001:db8::1", 5060, "tcp")["allowed"]
    assert rpc(sipr.ctl, "stats.get", "security.acl")["security.acl.rules"] == 2
