"""Accounting writers, the spool and `sipr cdr export`, on real files (the
PostgreSQL writer against a real server is in tests/sipp/test_accounting_pg.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipr.acc.spool import Spool
from sipr.acc.writers import AccountingError, open_writer
from sipr.cli import CliError
from sipr.cli_cdr import parse_time


def cdr(i: int, *, start: float = 1_700_000_000.0, disposition: str = "answered") -> dict:
    return {
        "type": "cdr", "id": f"0000-0000-0000-{i:04x}", "call_id": f"call-{i}",
        "caller": "sip:alice@a.example", "callee": "sip:bob@b.example",
        "source": "udp:127.0.0.1:5070", "destination": "127.0.0.1:5090",
        "start": start + i, "answer": start + i + 1, "end": start + i + 3, "duration": 2.0,
        "disposition": disposition, "missed": disposition in ("busy", "cancelled", "no_answer"),
        "code": 200 if disposition == "answered" else 486, "reason": "OK",
        "end_reason": "caller_bye", "from_tag": "a", "to_tag": "b",
        "extra": {"customer": "acme"},
    }  # fmt: skip


def request(i: int, method: str = "INVITE", code: int = 200) -> dict:
    return {
        "type": "request", "id": f"1111-0000-0000-{i:04x}", "time": 1_700_000_000.0 + i,
        "method": method, "from_user": "alice", "from_domain": "a.example",
        "to_user": "bob", "to_domain": "b.example", "request_uri": "sip:bob@b.example",
        "call_id": f"call-{i}", "from_tag": "a", "to_tag": "b", "code": code, "reason": "OK",
        "source": "udp:127.0.0.1:5070", "failed": code >= 300, "extra": {},
    }  # fmt: skip


def test_sqlite_writer_ignores_records_it_already_has(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "acc.db"
    w = open_writer(f"sqlite:///{db}")

    async def go() -> None:
        batch = [cdr(1), cdr(2, disposition="busy"), request(1), request(2, "BYE", 481)]
        await w.write(batch)
        await w.write(batch)  # a retried batch lands once
        await w.close()

    asyncio.run(go())
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM cdr").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM acc").fetchone() == (2,)
    assert con.execute("SELECT call_id, code FROM missed_calls").fetchall() == [("call-2", 486)]
    assert con.execute("SELECT failed FROM acc WHERE method = 'BYE'").fetchone() == (1,)
    assert json.loads(con.execute("SELECT extra FROM cdr LIMIT 1").fetchone()[0]) == {
        "customer": "acme"
    }


def test_jsonl_writer_and_unknown_urls(tmp_path: Path) -> None:
    path = tmp_path / "acc.jsonl"
    w = open_writer(f"jsonl://{path}")

    async def go() -> None:
        await w.write([cdr(1), request(1)])
        await w.close()

    asyncio.run(go())
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["cdr", "request"]
    with pytest.raises(AccountingError, match="use sqlite:///"):
        open_writer("mysql://db/acc")


def test_postgres_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(AccountingError, match=r"pip install 'sipr\[postgres\]'"):
        open_writer("postgresql://sipr@127.0.0.1/sipr")


def test_spool_is_durable_ordered_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=4096)
    assert spool.put([cdr(1), cdr(2)])
    assert spool.put([request(3)])
    files = spool.files()
    assert len(files) == 2
    assert [r["id"] for r in Spool.read(files[0])] == [cdr(1)["id"], cdr(2)["id"]]
    assert spool.records() == 3
    # Beyond the bound a batch is refused and counted, never half written.
    assert not spool.put([cdr(i) for i in range(100)])
    assert spool.dropped == 100 and len(spool.files()) == 2
    for f in files:
        Spool.done(f)
    assert spool.files() == [] and spool.size() == 0


def test_parse_time_accepts_iso_and_ages() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert (
        parse_time("2024-05-01T10:30", now) == datetime(2024, 5, 1, 10, 30, tzinfo=UTC).timestamp()
    )
    assert parse_time("30m", now) == now.timestamp() - 1800
    assert parse_time("7d", now) == now.timestamp() - 7 * 86400
    with pytest.raises(CliError, match="bad time"):
        parse_time("yesterday", now)


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipr", "cdr", "export", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cdr_export_csv_and_json(tmp_path: Path) -> None:
    db = tmp_path / "acc.db"
    w = open_writer(f"sqlite:///{db}")

    async def go() -> None:
        await w.write([cdr(i) for i in range(5)] + [cdr(9, disposition="busy"), request(1)])
        await w.close()

    asyncio.run(go())
    url = f"sqlite:///{db}"
    out = _export("--db", url, "--since", "2023-11-14T22:13:22", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    # Starts at 1_700_000_000 + i: the range begins at i = 2.
    assert [r["call_id"] for r in rows] == ["call-2", "call-3", "call-4", "call-9"]
    assert rows[0]["start_time"] == "2023-11-14T22:13:22.000+00:00"
    assert json.loads(rows[0]["extra"]) == {"customer": "acme"}
    out = _export("--db", url, "--since", "2023-01-01", "--format", "json", "--type", "missed")
    assert out.returncode == 0, out.stderr
    (missed,) = json.loads(out.stdout)
    assert (missed["call_id"], missed["code"], missed["missed"]) == ("call-9", 486, True)
    out = _export("--db", url, "--since", "2023-01-01", "--format", "json", "--type", "acc")
    assert [r["method"] for r in json.loads(out.stdout)] == ["INVITE"]
    bad = _export("--db", url, "--format", "xml")
    assert bad.returncode == 1 and "--format xml" in bad.stderr
    missing = _export("--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 1 and "no accounting database" in missing.stderr
