"""The two accounting tables, one description for every writer and for
`sipr cdr export`: `acc` (one row per accounted request, Kamailio's `acc`
table) and `cdr` (one row per dialog), plus the `missed_calls` view (CDRs of
calls not answered because busy, cancelled or unanswered).

Times are Unix seconds (float): `to_timestamp(start_time)` in PostgreSQL,
`datetime(start_time, 'unixepoch')` in SQLite.
"""

from __future__ import annotations

import json
from typing import Any

#: (column, record key, SQLite type, PostgreSQL type)
ACC_COLUMNS: list[tuple[str, str, str, str]] = [
    ("id", "id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    ("time", "time", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("method", "method", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("from_user", "from_user", "TEXT", "TEXT"),
    ("from_domain", "from_domain", "TEXT", "TEXT"),
    ("to_user", "to_user", "TEXT", "TEXT"),
    ("to_domain", "to_domain", "TEXT", "TEXT"),
    ("request_uri", "request_uri", "TEXT", "TEXT"),
    ("call_id", "call_id", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("from_tag", "from_tag", "TEXT", "TEXT"),
    ("to_tag", "to_tag", "TEXT", "TEXT"),
    ("code", "code", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("reason", "reason", "TEXT", "TEXT"),
    ("source", "source", "TEXT", "TEXT"),
    ("failed", "failed", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    ("extra", "extra", "TEXT", "JSONB"),
]

CDR_COLUMNS: list[tuple[str, str, str, str]] = [
    ("id", "id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    ("call_id", "call_id", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("caller", "caller", "TEXT", "TEXT"),
    ("callee", "callee", "TEXT", "TEXT"),
    ("source", "source", "TEXT", "TEXT"),
    ("destination", "destination", "TEXT", "TEXT"),
    ("start_time", "start", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("answer_time", "answer", "REAL", "DOUBLE PRECISION"),
    ("end_time", "end", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("duration", "duration", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("disposition", "disposition", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("missed", "missed", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    ("code", "code", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("reason", "reason", "TEXT", "TEXT"),
    ("end_reason", "end_reason", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("from_tag", "from_tag", "TEXT", "TEXT"),
    ("to_tag", "to_tag", "TEXT", "TEXT"),
    ("extra", "extra", "TEXT", "JSONB"),
]

#: record "type" → (table, columns, time column used by export --since)
TABLES: dict[str, tuple[str, list[tuple[str, str, str, str]], str]] = {
    "request": ("acc", ACC_COLUMNS, "time"),
    "cdr": ("cdr", CDR_COLUMNS, "start_time"),
}

MISSED_VIEW = "missed_calls"


def row(record: dict[str, Any], columns: list[tuple[str, str, str, str]]) -> tuple[Any, ...]:
    """A record's values in column order (`extra` as JSON text)."""
    out: list[Any] = []
    for _column, key, _lite, _pg in columns:
        value = record.get(key)
        if key == "extra":
            value = json.dumps(value or {}, separators=(",", ":"), sort_keys=True)
        out.append(value)
    return tuple(out)


def sqlite_ddl() -> list[str]:
    out = []
    for table, columns, time_column in TABLES.values():
        cols = ", ".join(f'"{c}" {lite}' for c, _k, lite, _pg in columns)
        out.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        out.append(f"CREATE INDEX IF NOT EXISTS {table}_{time_column} ON {table} ({time_column})")
        out.append(f"CREATE INDEX IF NOT EXISTS {table}_call_id ON {table} (call_id)")
    out.append(f"CREATE VIEW IF NOT EXISTS {MISSED_VIEW} AS SELECT * FROM cdr WHERE missed = 1")
    return out


def postgres_ddl() -> list[str]:
    out = []
    for table, columns, time_column in TABLES.values():
        cols = ", ".join(f'"{c}" {pg}' for c, _k, _lite, pg in columns)
        out.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        out.append(f"CREATE INDEX IF NOT EXISTS {table}_{time_column} ON {table} ({time_column})")
        out.append(f"CREATE INDEX IF NOT EXISTS {table}_call_id ON {table} (call_id)")
    out.append(f"CREATE OR REPLACE VIEW {MISSED_VIEW} AS SELECT * FROM cdr WHERE missed")
    return out
