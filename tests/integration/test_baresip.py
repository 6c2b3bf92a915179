"""Acceptance (issue 12, point 1): real softphones against the pbx as shipped.

`sipr run examples/pbx.py` with default settings (only the data directory and
the ports are the test's), users made with `sipr user add`, and Debian's
baresip 1.0 (tests/baresip.py): alice and bob register (401, then 200), alice
calls bob, the call is up on both sides for 2 s, alice hangs up and the BYE
goes through sipr (it Record-Routed the call) and is answered 200. A phone
with a wrong password and one with an unknown user get a final error and
never register. Over UDP and over TCP. This is what the README's "point two
SIP phones" sentence promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.baresip import Baresip, BaresipError
from tests.conftest import EXAMPLES, start_sipr


def sipr_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipr", *args],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_two_baresip_phones_register_and_call_through_the_default_pbx(
    tmp_path: Path, transport: str
) -> None:
    # Defaults everywhere: no SIPR_* setting, only our own data directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPR_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    for user in ("alice", "bob"):
        added = sipr_cli(env, "user", "add", user, "--password", f"{user}-secret")
        assert added.returncode == 0, added.stderr
    env["SIPR_RUN_DIR"] = str(tmp_path / "run")
    pbx = start_sipr(EXAMPLES / "pbx.py", env=env)
    proxy = pbx.udp if transport == "udp" else pbx.tcp
    sipr_at = f"{proxy[0]}:{proxy[1]}"
    phones: list[Baresip] = []

    def phone(user: str, password: str) -> Baresip:
        p = Baresip(
            user, password, registrar=proxy, transport=transport,
            workdir=tmp_path / f"{user}-{password}",
        )  # fmt: skip
        phones.append(p)
        return p.start()

    try:
        alice = phone("alice", "alice-secret")
        bob = phone("bob", "bob-secret")
        for p in (alice, bob):
            assert p.wait_event("REGISTER_OK")["param"] == "200 OK"
            statuses = [
                first_line(text)
                for _, _, text in p.sip_messages()
                if "REGISTER" in text.split("CSeq:", 1)[-1].split("\n", 1)[0]
            ]
            assert statuses[:4] == [
                f"REGISTER sip:127.0.0.1;transport={transport} SIP/2.0",
                "SIP/2.0 401 Unauthorized",
                f"REGISTER sip:127.0.0.1;transport={transport} SIP/2.0",
                "SIP/2.0 200 OK",
            ], statuses

        intruder = phone("alice", "wrong-password")
        stranger = phone("carol", "carol-secret")
        for p in (intruder, stranger):
            failed = p.wait_event("REGISTER_FAIL")
            assert failed["param"].startswith("403"), failed

        alice.dial("sip:bob@127.0.0.1")
        bob.wait_event("CALL_INCOMING")
        bob.accept()
        established = [p.wait_event("CALL_ESTABLISHED") for p in (alice, bob)]
        assert established[0]["id"] == established[1]["id"]  # one call: same Call-ID
        call_id = established[0]["id"]
        up_since = time.monotonic()
        # Stays up 2 s: neither side closes it (a lost ACK or a failed
        # session timer would show as CALL_CLOSED here).
        with pytest.raises(BaresipError, match="no CALL_CLOSED"):
            alice.wait_event("CALL_CLOSED", timeout=2.0)
        assert not any(e["type"] == "CALL_CLOSED" for e in bob.events)
        assert time.monotonic() - up_since >= 2.0

        alice.hangup()
        bob.wait_event("CALL_CLOSED", id=call_id)
        bye_ok = alice.wait_sip(
            lambda src, dst, text: (
                src == sipr_at
                and first_line(text) == "SIP/2.0 200 OK"
                and "BYE" in text.split("CSeq:", 1)[1].split("\n", 1)[0]
            ),
            "the 200 OK to alice's BYE, from sipr",
        )
        assert f"Call-ID: {call_id}" in bye_ok[2]
        # The BYE went to sipr (the Record-Route of the 200 to the INVITE) and
        # sipr passed it on to bob.
        sent = [(dst, first_line(t)) for src, dst, t in alice.sip_messages() if src != sipr_at]
        assert any(d == sipr_at and line.startswith("BYE ") for d, line in sent), sent
        answer = next(
            t for src, _, t in alice.sip_messages()
            if src == sipr_at and first_line(t).startswith("SIP/2.0 200")
            and "INVITE" in t.split("CSeq:", 1)[1].split("\n", 1)[0]
        )  # fmt: skip
        assert f"Record-Route: <sip:{sipr_at}" in answer, answer
        bob.wait_sip(
            lambda src, dst, text: src == sipr_at and first_line(text).startswith("BYE "),
            "the BYE relayed by sipr",
        )

        # Only alice's and bob's phones are registered: the wrong password
        # and the unknown user never got a binding.
        dump = sipr_cli(env, "ctl", "--ctl", str(pbx.ctl), "--json", "ul.dump")
        assert dump.returncode == 0, dump.stderr
        bindings = {
            (row["aor"], c["contact"].split("@", 1)[1].split(";")[0].rstrip(">"))
            for row in json.loads(dump.stdout)
            for c in row["contacts"]
        }
        assert bindings == {
            ("alice@127.0.0.1", f"127.0.0.1:{alice.sip_port}"),
            ("bob@127.0.0.1", f"127.0.0.1:{bob.sip_port}"),
        }, bindings
        for p in (intruder, stranger):
            assert not any(e["type"] == "REGISTER_OK" for e in p.events), p.events
    finally:
        for p in phones:
            p.stop()
        code = pbx.stop()
    assert code == 0, pbx.log()
