"""Where accounting records go: SQLite (default, in the data directory),
PostgreSQL (`postgresql://...`, with the `sipr[postgres]` extra) or JSON
lines (`jsonl:///path/acc.jsonl`).

A writer's `write(batch)` is all or nothing and raises when the batch did
not land; the rows carry the record ids as primary keys and are inserted
with "ignore duplicates", so a batch written again after an uncertain
failure (a connection lost during the commit) lands once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sipr.acc import schema


class AccountingError(Exception):
    """The accounting URL is unusable (unknown scheme, missing driver)."""


class Writer(Protocol):
    url: str

    async def write(self, records: list[dict[str, Any]]) -> None: ...
    async def close(self) -> None: ...


def default_url() -> str:
    """`SIPR_ACC` if set, else SQLite `acc.db` in the data directory."""
    from sipr.paths import data_dir

    return os.environ.get("SIPR_ACC") or f"sqlite:///{data_dir() / 'acc.db'}"


def open_writer(url: str | None = None) -> Writer:
    """The writer for `url` (nothing is connected yet)."""
    url = url or default_url()
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return SqliteWriter(url, file_path(url))
    if scheme in ("postgresql", "postgres"):
        return PostgresWriter(url)
    if scheme == "jsonl":
        return JsonLinesWriter(url, file_path(url))
    if url.endswith(".jsonl") and "://" not in url:
        return JsonLinesWriter(url, Path(url))
    raise AccountingError(
        f"accounting URL {url!r}: use sqlite:///path.db, postgresql://user@host/db "
        "or jsonl:///path.jsonl"
    )


def file_path(url: str) -> Path:
    """The file of `sqlite:///abs/path.db` (also `sqlite:////abs`, as
    `sqlite:///{absolute path}` gives) or `sqlite://rel/path.db`; same for jsonl."""
    parts = urlsplit(url)
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    if not path:
        raise AccountingError(f"accounting URL {url!r} names no file (sqlite:///path/acc.db)")
    return Path("/" + path.lstrip("/")) if path.startswith("/") else Path(path)


def _split(records: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table, in column order."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for r in records:
        table, columns, _ = schema.TABLES[r["type"]]
        rows.setdefault(table, []).append(schema.row(r, columns))
    return rows


def _columns(table: str) -> list[tuple[str, str, str, str]]:
    return next(c for t, c, _ in schema.TABLES.values() if t == table)


class SqliteWriter:
    """One connection on a thread of its own: the loop never waits on disk."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sipr-acc-sqlite")

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for stmt in schema.sqlite_ddl():
                db.execute(stmt)
            db.commit()
            self._db = db
        return self._db

    def _write(self, records: list[dict[str, Any]]) -> None:
        db = self._connect()
        try:
            with db:
                for table, rows in _split(records).items():
                    cols = _columns(table)
                    names = ", ".join(f'"{c[0]}"' for c in cols)
                    marks = ", ".join("?" for _ in cols)
                    db.executemany(
                        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", rows
                    )
        except sqlite3.Error:
            db.close()
            self._db = None
            raise

    async def write(self, records: list[dict[str, Any]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, records)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        raise AccountingError(
            "postgresql:// accounting needs the asyncpg driver: pip install 'sipr[postgres]'"
        ) from None
    return asyncpg


class PostgresWriter:
    """asyncpg, one connection, reconnected after any failure."""

    CONNECT_TIMEOUT = 3.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._asyncpg = _asyncpg()
        self._conn: Any = None

    async def _connect(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            conn = await self._asyncpg.connect(self.url, timeout=self.CONNECT_TIMEOUT)
            try:
                for stmt in schema.postgres_ddl():
                    await conn.execute(stmt)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def write(self, records: list[dict[str, Any]]) -> None:
        try:
            conn = await self._connect()
            async with conn.transaction():
                for table, rows in _split(records).items():
                    cols = _columns(table)
                    names = ", ".join(f'"{c[0]}"' for c in cols)
                    marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
                    await conn.executemany(
                        f"INSERT INTO {table} ({names}) VALUES ({marks}) "
                        "ON CONFLICT (id) DO NOTHING",
                        rows,
                    )
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.terminate()
            except Exception:
                pass

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                conn.terminate()


class JsonLinesWriter:
    """One JSON object per line, appended and fsynced per batch."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sipr-acc-jsonl")

    def _write(self, records: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    async def write(self, records: list[dict[str, Any]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, records)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)
