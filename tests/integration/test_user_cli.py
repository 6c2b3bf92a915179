"""Acceptance (issue 5, point 6): `sipr user add|rm|list --store --realm` over
SQLite and redis; errors are one line naming the problem."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipr.auth import ha1_all
from sipr.store import open_store
from tests.conftest import EXAMPLES, start_sipr, status_of
from tests.sipp.regkit import RedisServer, SipClient


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.stop()


def sipr_user(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPR_")}
    env["XDG_DATA_HOME"] = str(tmp / "xdg")
    return subprocess.run(
        [sys.executable, "-m", "sipr", "user", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("sipr: error: ")
    return lines[0]


def stored_user(url: str, realm: str, user: str) -> dict[str, str] | None:
    async def go() -> dict[str, str] | None:
        st = open_store(url)
        try:
            return await st.get_user(realm, user)
        finally:
            await st.close()

    return asyncio.run(go())


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'users.db'}"
    server = request.getfixturevalue("redis_server")
    server.flush()
    return server.url(2)


def test_add_list_rm(tmp_path: Path, store_url: str) -> None:
    p = sipr_user(tmp_path, "add", "alice", "--password", "x", "--store", store_url)
    assert p.returncode == 0 and p.stdout.strip() == "user alice saved (realm sipr)", p.stderr
    p = sipr_user(tmp_path, "add", "bob", "--password", "y", "--realm", "pbx.example.com",
                  "--store", store_url)  # fmt: skip
    assert p.returncode == 0, p.stderr
    # Only HA1s are stored (MD5 and SHA-256), never the password.
    assert stored_user(store_url, "sipr", "alice") == ha1_all("alice", "sipr", "x")
    assert stored_user(store_url, "pbx.example.com", "bob") == ha1_all(
        "bob", "pbx.example.com", "y"
    )

    p = sipr_user(tmp_path, "list", "--store", store_url)
    assert p.returncode == 0
    assert p.stdout.splitlines() == [
        "REALM            USER",
        "pbx.example.com  bob",
        "sipr             alice",
    ]
    p = sipr_user(tmp_path, "list", "--json", "--store", store_url)
    assert json.loads(p.stdout) == [
        {"realm": "pbx.example.com", "user": "bob"},
        {"realm": "sipr", "user": "alice"},
    ]
    p = sipr_user(tmp_path, "list", "--json", "--realm", "sipr", "--store", store_url)
    assert json.loads(p.stdout) == [{"realm": "sipr", "user": "alice"}]

    p = sipr_user(tmp_path, "rm", "alice", "--store", store_url)
    assert p.returncode == 0 and p.stdout.strip() == "user alice removed (realm sipr)"
    assert stored_user(store_url, "sipr", "alice") is None
    line = one_error_line(sipr_user(tmp_path, "rm", "alice", "--store", store_url))
    assert line == "sipr: error: no user 'alice' in realm sipr"
    # bob is in another realm: not found in the default one.
    assert "no user 'bob'" in one_error_line(sipr_user(tmp_path, "rm", "bob", "--store", store_url))
    p = sipr_user(tmp_path, "rm", "bob", "--realm", "pbx.example.com", "--store", store_url)
    assert p.returncode == 0
    p = sipr_user(tmp_path, "list", "--store", store_url)
    assert p.returncode == 0 and p.stdout.strip() == "no users"
    assert json.loads(sipr_user(tmp_path, "list", "--json", "--store", store_url).stdout) == []


def test_default_store_is_in_xdg_data_home(tmp_path: Path) -> None:
    p = sipr_user(tmp_path, "add", "carol", "--password", "z")
    assert p.returncode == 0, p.stderr
    db = tmp_path / "xdg" / "sipr" / "sipr.db"
    assert db.exists()
    assert stored_user(f"sqlite:///{db}", "sipr", "carol") == ha1_all("carol", "sipr", "z")


def test_errors_are_one_line(tmp_path: Path) -> None:
    line = one_error_line(sipr_user(tmp_path, "list", "--store", "bogus://x"))
    assert "unknown store URL 'bogus://x'" in line
    line = one_error_line(
        sipr_user(tmp_path, "add", "a", "--password", "x", "--store", "sqlite://")
    )
    assert "names no database file" in line
    # A database path that is a directory, a redis nobody listens on.
    line = one_error_line(sipr_user(tmp_path, "list", "--store", f"sqlite:///{tmp_path}"))
    assert "unable to open database file" in line
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    for args in (("list",), ("add", "a", "--password", "x"), ("rm", "a")):
        line = one_error_line(sipr_user(tmp_path, *args, "--store", dead))
        assert "ConnectionError" in line, line
    store = f"sqlite:///{tmp_path / 'u.db'}"
    line = one_error_line(sipr_user(tmp_path, "add", "a:b", "--password", "x", "--store", store))
    assert "invalid user name 'a:b'" in line
    line = one_error_line(sipr_user(tmp_path, "add", "a", "--password", "", "--store", store))
    assert "must not be empty" in line


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_users_added_by_the_cli_authenticate_on_the_pbx(tmp_path: Path, store_url: str) -> None:
    p = sipr_user(tmp_path, "add", "alice", "--password", "s3", "--store", store_url)
    assert p.returncode == 0, p.stderr
    env = {
        "SIPR_STORE": store_url, "XDG_DATA_HOME": str(tmp_path / "xdg"), "SIPR_REALM": "sipr",
        "SIPR_DIGEST_ALGORITHMS": "SHA-256,MD5",  # both HA1s stored: either answer works
    }  # fmt: skip
    pbx = start_sipr(EXAMPLES / "pbx.py", env=env)
    try:
        for alg in ("SHA-256", "MD5"):
            c = SipClient(pbx.udp, auth=("alice", "s3"), algorithm=alg)
            try:
                assert status_of(c.register(expires=600)) == 200
            finally:
                c.close()
        assert sipr_user(tmp_path, "rm", "alice", "--store", store_url).returncode == 0
        c = SipClient(pbx.udp, auth=("alice", "s3"))
        try:
            assert status_of(c.register(expires=600)) == 403  # no such user any more
        finally:
            c.close()
    finally:
        assert pbx.stop() == 0, pbx.log()
