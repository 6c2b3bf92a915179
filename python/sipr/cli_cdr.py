"""`sipr cdr export`: accounting records (CDRs, request records, missed
calls) from the accounting database, as CSV or JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from sipr.cli import CliError, cli

cdr = typer.Typer(help="Accounting records: CDRs, request records, missed calls.")
cli.add_typer(cdr, name="cdr", no_args_is_help=True)

KINDS = ("cdr", "acc", "missed")
FORMATS = ("csv", "json")
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None) -> float:
    """An ISO date or date-time (UTC unless it says), or an age (`90s`,
    `30m`, `12h`, `7d`, `2w`) before now; returns Unix seconds."""
    now = now or datetime.now(UTC)
    m = _AGE.match(text.strip().lower())
    if m:
        return (now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])).timestamp()
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"bad time {text!r}: use an ISO date/time (2024-05-01, 2024-05-01T10:00) or an "
            "age (30m, 12h, 7d)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _iso(t: Any) -> Any:
    if isinstance(t, (int, float)):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return t


def _table(kind: str) -> tuple[str, list[str], str]:
    from sipr.acc import schema

    if kind == "acc":
        table, columns, time_col = schema.TABLES["request"]
    else:
        table, columns, time_col = schema.TABLES["cdr"]
        if kind == "missed":
            table = schema.MISSED_VIEW
    return table, [c[0] for c in columns], time_col


def _rows_sqlite(path: Path, kind: str, since: float, until: float) -> list[dict[str, Any]]:
    if not path.exists():
        raise CliError(f"no accounting database at {path} (see --db)")
    table, columns, time_col = _table(kind)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise CliError(f"{path}: {e}") from None
    try:
        names = ", ".join(f'"{c}"' for c in columns)
        cur = db.execute(
            f"SELECT {names} FROM {table} WHERE {time_col} >= ? AND {time_col} < ? "
            f"ORDER BY {time_col}",
            (since, until),
        )
        return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
    except sqlite3.Error as e:
        raise CliError(f"{path}: {e}") from None
    finally:
        db.close()


def _rows_postgres(url: str, kind: str, since: float, until: float) -> list[dict[str, Any]]:
    from sipr.acc.writers import AccountingError, _asyncpg

    try:
        asyncpg = _asyncpg()
    except AccountingError as e:
        raise CliError(str(e)) from None
    table, columns, time_col = _table(kind)

    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            names = ", ".join(f'"{c}"' for c in columns)
            rows = await conn.fetch(
                f"SELECT {names} FROM {table} WHERE {time_col} >= $1 AND {time_col} < $2 "
                f"ORDER BY {time_col}",
                since,
                until,
            )
            return [dict(zip(columns, r, strict=True)) for r in rows]
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except (TimeoutError, OSError) as e:
        raise CliError(f"cannot reach {url}: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("asyncpg"):
            raise CliError(f"{url}: {e}") from None
        raise


def _rows_jsonl(path: Path, kind: str, since: float, until: float) -> list[dict[str, Any]]:
    from sipr.acc import schema

    if not path.exists():
        raise CliError(f"no accounting file at {path} (see --db)")
    rtype = "request" if kind == "acc" else "cdr"
    _table_name, cols, time_col = schema.TABLES[rtype]
    key_of = {c[0]: c[1] for c in cols}
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("type") != rtype or (kind == "missed" and not r.get("missed")):
                continue
            t = r.get(key_of[time_col])
            if not isinstance(t, (int, float)) or not since <= t < until:
                continue
            out.append({c: r.get(k) for c, k in key_of.items()})
    out.sort(key=lambda r: r[time_col])
    return out


def read_rows(url: str, kind: str, since: float, until: float) -> list[dict[str, Any]]:
    from sipr.acc.writers import AccountingError, file_path

    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme == "sqlite":
            return _rows_sqlite(file_path(url), kind, since, until)
        if scheme == "jsonl":
            return _rows_jsonl(file_path(url), kind, since, until)
    except AccountingError as e:
        raise CliError(str(e)) from None
    if scheme in ("postgresql", "postgres"):
        return _rows_postgres(url, kind, since, until)
    if url.endswith(".jsonl"):
        return _rows_jsonl(Path(url), kind, since, until)
    raise CliError(f"--db {url}: use sqlite:///path.db, postgresql://... or jsonl:///path.jsonl")


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    shown = []
    for r in rows:
        row = {k: (_iso(v) if k == "time" or k.endswith("_time") else v) for k, v in r.items()}
        for flag in ("failed", "missed"):
            if flag in row and row[flag] is not None:
                row[flag] = bool(row[flag])
        if isinstance(row.get("extra"), str):
            try:
                row["extra"] = json.loads(row["extra"])
            except ValueError:
                pass
        shown.append(row)
    if fmt == "json":
        return json.dumps(shown, indent=2) + "\n"
    buf = io.StringIO()
    if shown:
        w = csv.DictWriter(buf, fieldnames=list(shown[0]), lineterminator="\n")
        w.writeheader()
        for row in shown:
            if isinstance(row.get("extra"), dict):
                row["extra"] = json.dumps(row["extra"], separators=(",", ":"), sort_keys=True)
            w.writerow(row)
    return buf.getvalue()


@cdr.command("export")
def export(
    since: Annotated[
        str, typer.Option("--since", help="from: ISO date/time (UTC) or an age: 30m, 12h, 7d")
    ] = "1d",
    until: Annotated[
        str | None, typer.Option("--until", help="to (exclusive), same forms; default now")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    kind: Annotated[
        str, typer.Option("--type", help="cdr (calls), acc (request records) or missed")
    ] = "cdr",
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="accounting database: sqlite:///path.db, postgresql://..., jsonl:///path "
            "(default: SIPR_ACC or acc.db in the data dir)",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file (default stdout)")
    ] = None,
) -> None:
    """Export accounting records in a time range (by call start / request time)."""
    from sipr.acc.writers import default_url

    if fmt not in FORMATS:
        raise CliError(f"--format {fmt}: use csv or json")
    if kind not in KINDS:
        raise CliError(f"--type {kind}: use cdr, acc or missed")
    start = parse_time(since)
    end = parse_time(until) if until else datetime.now(UTC).timestamp() + 1
    if end <= start:
        raise CliError("--until must be after --since")
    text = render(read_rows(db or default_url(), kind, start, end), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
