"""Acceptance (issue 7, point 1) and the control interface: every control
method answers against a running sipr carrying SIPp traffic; `ul.dump` shows
what SIPp registered; `tm.stats` matches SIPp's call counts. Plus `sipr ctl`
(tables, --json, errors), the socket's lifecycle and `@app.rpc`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, start_sipr
from tests.integration.ctlkit import OPS_APP, RpcFault, register_users, rpc, sipr_ctl
from tests.sipp.peers import Sipp
from tests.sipp.regkit import wait_for

CALLS = 200
USERS = 20


def _call_args(name: str, ctl: Path) -> list[object]:
    """Arguments that make each method succeed on the test app."""
    if name in ("cfg.get", "cfg.set"):
        first = rpc(ctl, "cfg.list")[0]
        return [first["name"]] if name == "cfg.get" else [first["name"], first["value"]]
    return {
        "system.methodHelp": ["tm.stats"],
        "ul.lookup": ["sip:user1@ops.test"],
        "ul.rm": ["user2@ops.test"],
        "stats.get": ["transactions."],
        "app.add": [2, 3],
        "app.echo": ["a", 1],
        "ban.add": ["192.0.2.1", 60],
        "ban.remove": ["192.0.2.1"],
        "auth.unlock": ["nobody@ops.test"],
        "permissions.check": ["carriers", "192.0.2.1"],
        "limits.set_method": ["OPTIONS", None],
    }.get(name, [])


@pytest.mark.sipp
def test_every_command_answers_with_sipp_traffic(sipp: str, sipr_factory) -> None:
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=CALLS, timeout_s=90)
    try:
        # A name as next hop, so the resolver cache (dns.view) has an entry.
        proxy = sipr_factory(OPS_APP, env={"SIPR_TARGET": f"sip:localhost:{uas_port}"})
        reg_port = register_users(sipp, proxy, USERS)
        rpc(proxy.ctl, "stats.reset")
        uac = Sipp(sipp, "uac_rr.xml", uac_port, calls=CALLS, remote=proxy.udp, rate=100,
                   timeout_s=90)  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed) == (CALLS, 0), r.summary()

        # tm.stats against SIPp's counts: each call is one INVITE and one BYE
        # transaction on each side (the ACK for the 2xx has none).
        tm = rpc(proxy.ctl, "tm.stats")
        assert tm["server_total"] == 2 * r.successful, tm
        assert tm["client_total"] == 2 * r.successful, tm
        assert tm["total"] == 4 * r.successful, tm
        assert tm["2xx"] == 2 * r.successful, tm  # 200 to INVITE and to BYE
        counts = rpc(proxy.ctl, "stats.get", "requests_in.")
        assert counts["requests_in.INVITE"] == CALLS, counts
        assert counts["requests_in.ACK"] == CALLS, counts
        assert counts["requests_in.BYE"] == CALLS, counts

        # ul.dump: the bindings SIPp registered, each at SIPp's address.
        dump = rpc(proxy.ctl, "ul.dump")
        assert len(dump) == USERS, dump
        for entry in dump:
            assert entry["aor"].endswith("@ops.test")
            (contact,) = entry["contacts"]
            user = entry["aor"].split("@")[0]
            assert contact["contact"] == f"sip:{user}@127.0.0.1:{reg_port}", entry
            assert 0 < contact["expires"] <= 300
        assert rpc(proxy.ctl, "stats.get", "registrations.")["registrations.bindings"] == USERS
        every = rpc(proxy.ctl, "stats.get")
        for key in (
            "requests_in.INVITE", "responses_in.2xx", "responses_out.1xx", "responses_out.6xx",
            "transactions.server", "transactions.client", "transactions.server_total",
            "handlers.suspended", "registrations.bindings", "core.connections",
            "core.ingress_queue", "loop.lag_ms", "process.rss_bytes",
        ):  # fmt: skip
            assert key in every, key
        assert every["responses_in.2xx"] >= 2 * CALLS  # the UAS's 200s to INVITE and BYE
        assert every["process.rss_bytes"] > 1 << 20

        methods = rpc(proxy.ctl, "system.listMethods")
        for name in (
            "system.listMethods", "core.version", "core.uptime", "core.ps", "core.tcp_info",
            "tm.stats", "ul.dump", "ul.lookup", "ul.rm", "stats.get", "stats.reset",
            "cfg.list", "cfg.get", "cfg.set", "dns.view", "tls.list", "app.reload",
            "app.add", "app.echo",
        ):  # fmt: skip
            assert name in methods, name
        answers = {}
        # The runtime-config and reload methods last: they change the server.
        last = ("cfg.list", "cfg.get", "cfg.set", "app.reload", "dns.flush")
        for name in [m for m in methods if m not in last] + list(last):
            answers[name] = rpc(proxy.ctl, name, *_call_args(name, proxy.ctl))
        assert answers["core.version"]["version"]
        assert answers["core.uptime"]["uptime"] > 0
        assert any(t["role"] == "serving loop" for t in answers["core.ps"])
        assert answers["core.tcp_info"]["listeners"]["udp"] == [f"127.0.0.1:{proxy.udp[1]}"]
        assert answers["ul.lookup"]["contacts"][0]["contact"].startswith("sip:user1@")
        assert answers["ul.rm"] == {"aor": "user2@ops.test", "removed": 1}
        assert answers["tls.list"] == []  # no TLS listener
        (cached,) = answers["dns.view"]
        assert (cached["host"], cached["port"], cached["address"]) == (
            "localhost",
            uas_port,
            "127.0.0.1",
        ), cached
        assert answers["app.add"] == 5
        assert answers["app.echo"] == ["a", 1]
        assert set(answers["stats.get"]) >= {"transactions.server", "transactions.client_total"}
        assert len(rpc(proxy.ctl, "ul.dump")) == USERS - 1
        table = sipr_ctl("--ctl", str(proxy.ctl), "ul.dump").stdout.splitlines()
        assert table[0].split()[:3] == ["AOR", "CONTACT", "EXPIRES"], table[0]
        assert len(table) == 1 + USERS - 1
        assert all(f"@127.0.0.1:{reg_port}" in row for row in table[1:])
        with pytest.raises(RpcFault, match="not found"):
            rpc(proxy.ctl, "ul.lookup", "user2@ops.test")
    finally:
        uas.kill()


def test_sipr_ctl_tables_json_and_errors(sipr_factory) -> None:
    proxy = sipr_factory(OPS_APP)
    env_ctl = ["--ctl", str(proxy.ctl)]

    listing = sipr_ctl(*env_ctl)
    assert listing.returncode == 0, listing.stderr
    assert "tm.stats" in listing.stdout and "ul.rm AOR [CONTACT]" in listing.stdout

    table = sipr_ctl(*env_ctl, "tm.stats")
    assert table.returncode == 0, table.stderr
    assert any(line.split() == ["server_total", "0"] for line in table.stdout.splitlines())

    as_json = sipr_ctl(*env_ctl, "--json", "app.echo", "5", "true", '{"a": [1]}', "alice@x")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [5, True, {"a": [1]}, "alice@x"]

    def one_error(p: subprocess.CompletedProcess[str]) -> str:
        assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        return lines[0]

    assert "no such method: tm.nope" in one_error(sipr_ctl(*env_ctl, "tm.nope"))
    bad = one_error(sipr_ctl(*env_ctl, "app.add", "1"))
    assert "bad arguments for app.add" in bad and "usage: app.add A B" in bad
    assert "app.add takes two integers" in one_error(sipr_ctl(*env_ctl, "app.add", "1", "x"))
    missing = proxy.ctl.parent / "absent.ctl"
    assert one_error(sipr_ctl("--ctl", str(missing), "tm.stats")) == (
        f"sipr: error: no sipr control socket at {missing}: is sipr running?"
    )
    assert one_error(sipr_ctl(*env_ctl, "ul.lookup", "nobody@ops.test")) == (
        "sipr: error: AOR not found: nobody@ops.test"
    )


def test_control_socket_lifecycle(tmp_path: Path) -> None:
    """Named after the first listener, mode 0600; a second sipr on the same
    socket is refused naming it; the socket is removed on exit; a stale
    socket file is replaced."""
    env = {"SIPR_RUN_DIR": str(tmp_path)}
    port = free_port()
    listen = (f"udp:127.0.0.1:{port}",)
    first = start_sipr(OPS_APP, listen=listen, env=env)
    try:
        path = tmp_path / f"sipr-udp-127.0.0.1-{port}.ctl"
        assert first.ctl == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second = subprocess.run(
            [sys.executable, "-m", "sipr", "run", str(OPS_APP), "--listen", "udp:127.0.0.1:0",
             "--ctl", str(path)],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"sipr: error: another sipr is answering on control socket {path}: "
            "stop it or choose --ctl PATH"
        ]
        assert rpc(path, "core.uptime")["uptime"] > 0  # the first is untouched
    finally:
        assert first.stop() == 0, first.log()
    assert not path.exists()

    # A socket file nobody answers on (a crashed sipr) is replaced.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    third = start_sipr(OPS_APP, listen=listen, env=env)
    try:
        assert rpc(path, "system.listMethods")
    finally:
        assert third.stop() == 0, third.log()


def test_jsonrpc_framing_batches_and_bad_input(sipr_factory) -> None:
    """Newline-delimited JSON-RPC 2.0: several requests per connection, a
    batch, notifications, and clear errors for malformed input."""
    proxy = sipr_factory(OPS_APP)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(proxy.ctl))
        f = s.makefile("rwb")
        f.write(b'{"jsonrpc":"2.0","id":1,"method":"app.add","params":{"a":1,"b":2}}\n')
        f.write(b'{"jsonrpc":"2.0","method":"stats.reset"}\n')  # notification: no answer
        f.write(b"not json\n")
        f.write(b'[{"jsonrpc":"2.0","id":2,"method":"app.echo","params":[7]},'
                b'{"jsonrpc":"2.0","id":3,"method":"nope"}]\n')  # fmt: skip
        f.write(b'{"id":4,"method":"app.echo"}\n')
        f.flush()
        answers = [json.loads(f.readline()) for _ in range(4)]
    assert answers[0] == {"jsonrpc": "2.0", "id": 1, "result": 3}
    assert answers[1]["error"]["code"] == -32700
    assert answers[2][0]["result"] == [7]
    assert answers[2][1]["error"] == {"code": -32601, "message": "no such method: nope"}
    assert answers[3]["error"]["code"] == -32600

    # A request line beyond the bound is refused and the connection closed.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(proxy.ctl))
        try:
            s.sendall(b"[" + b" " * (2 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.makefile("rb").readline()
    assert b"request longer than" in reply
    assert rpc(proxy.ctl, "app.add", 1, 1) == 2  # still serving


def test_app_rpc_must_be_async() -> None:
    import sipr

    app = sipr.App()
    with pytest.raises(TypeError, match="must be 'async def'"):
        app.rpc("x.sync")(lambda: None)
    with pytest.raises(ValueError, match="without spaces"):
        app.rpc("bad name")


def test_no_registrar_is_a_clear_error(sipr_factory, tmp_path: Path) -> None:
    bare = tmp_path / "bare.py"
    bare.write_text(
        "import sipr\napp = sipr.App()\n\n@app.route\nasync def r(req):\n    req.reply(200)\n"
    )
    proxy = sipr_factory(bare)
    with pytest.raises(RpcFault, match=r"the app has no sipr\.Registrar"):
        rpc(proxy.ctl, "ul.dump")


VERSIONED_APP = """
import sipr

app = sipr.App()


@app.route
async def route(req: sipr.Request) -> None:
    req.reply(200)


@app.rpc("app.version")
async def version() -> int:
    return {version}
"""


def test_ctl_reload_and_runtime_settings(sipr_factory, tmp_path: Path) -> None:
    """`app.reload` swaps in the new script (its @app.rpc methods too) and
    refuses a broken one with its error; `cfg.set` changes a setting live."""
    script = tmp_path / "versioned.py"
    script.write_text(VERSIONED_APP.format(version=1))
    proxy = sipr_factory(script)
    ctl = ("--ctl", str(proxy.ctl))
    assert sipr_ctl(*ctl, "app.version").stdout.strip() == "1"

    script.write_text(VERSIONED_APP.format(version=2))
    reloaded = sipr_ctl(*ctl, "--json", "app.reload")
    assert reloaded.returncode == 0, reloaded.stderr
    answer = json.loads(reloaded.stdout)
    assert (answer["reloaded"], answer["reloads"]) == (True, 1), answer
    assert sipr_ctl(*ctl, "app.version").stdout.strip() == "2"

    script.write_text(VERSIONED_APP.format(version="(") + "\n")
    broken = sipr_ctl(*ctl, "app.reload")
    assert broken.returncode == 1
    (line,) = broken.stderr.strip().splitlines()
    assert line.startswith("sipr: error: reload refused, the running app stays:"), line
    assert "SyntaxError" in line, line
    assert sipr_ctl(*ctl, "app.version").stdout.strip() == "2"

    listing = sipr_ctl(*ctl, "cfg.list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split()[:2] == ["NAME", "VALUE"]
    assert sipr_ctl(*ctl, "cfg.set", "tm.t1", "0.25").returncode == 0
    assert json.loads(sipr_ctl(*ctl, "--json", "cfg.get", "tm.t1").stdout) == 0.25
    bad = sipr_ctl(*ctl, "cfg.set", "tm.t1", "-1")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "tm.t1" in bad.stderr
    assert json.loads(sipr_ctl(*ctl, "--json", "cfg.get", "tm.t1").stdout) == 0.25


def test_control_socket_bounds_connections(sipr_factory) -> None:
    """Beyond 16 connections at once, a new one is closed at once; the
    others keep working, and a slot frees when one closes."""
    proxy = sipr_factory(OPS_APP)
    held = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(proxy.ctl))
            held.append(s)
        # Each held connection is being served: one request answers.
        held[0].sendall(b'{"jsonrpc":"2.0","id":1,"method":"app.add","params":[1,1]}\n')
        assert json.loads(held[0].makefile("rb").readline())["result"] == 2
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(10)
            extra.connect(str(proxy.ctl))
            assert extra.recv(100) == b""  # closed by sipr without an answer
        held.pop().close()
        assert wait_for(lambda: _answers(proxy.ctl), 5, "a free connection slot")
    finally:
        for s in held:
            s.close()


def _answers(path: Path) -> bool:
    try:
        return rpc(path, "app.add", 2, 2) == 4
    except (OSError, ValueError):
        return False


def test_shell_completion_names_the_running_methods(sipr_factory) -> None:
    proxy = sipr_factory(OPS_APP)
    assert proxy.ctl is not None
    env = {
        **os.environ,
        "SIPR_RUN_DIR": str(proxy.ctl.parent),
        "_SIPR_COMPLETE": "complete_bash",
        "COMP_WORDS": "sipr ctl ul.",
        "COMP_CWORD": "2",
    }
    out = subprocess.run(
        [sys.executable, "-m", "sipr"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["ul.dump", "ul.lookup", "ul.rm"], (out.stdout, out.stderr)
