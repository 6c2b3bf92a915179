"""The on-disk spool: records the database could not take (it is down, or
sipr is stopping) wait here, in JSON-lines files, and are written on the
next occasion, also by the next run. Bounded in bytes: beyond the bound a
batch is refused (logged and counted), so a database down for days cannot
fill the disk.

A file is written whole (temporary name, fsync, rename) or not at all, and
deleted only after its records landed; the writers ignore ids they already
have, so a file written again after a crash lands once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sipr.acc")

SUFFIX = ".jsonl"


def spool_dir_for(url: str, base: Path | None = None) -> Path:
    """One spool directory per destination, so records never land in
    another database than the one they were meant for."""
    from sipr.paths import data_dir

    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (base or data_dir() / "acc-spool") / digest


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.dropped = 0
        self._seq = 0

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.name.endswith(SUFFIX))

    def size(self) -> int:
        total = 0
        for p in self.files():
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def records(self) -> int:
        """Records waiting on disk (counts lines; for stats)."""
        n = 0
        for p in self.files():
            try:
                with open(p, "rb") as f:
                    n += sum(1 for _ in f)
            except FileNotFoundError:
                continue
        return n

    def put(self, records: list[dict[str, Any]]) -> bool:
        """Writes one file (durably); False when the bound refuses it."""
        if not records:
            return True
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        if self.size() + len(data) > self.max_bytes:
            self.dropped += len(records)
            log.error(
                "accounting spool %s is full (%d bytes): %d records dropped",
                self.dir,
                self.max_bytes,
                len(records),
            )
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.dir / f"{name}{SUFFIX}")
        _fsync_dir(self.dir)
        return True

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    log.error("accounting spool %s: unreadable line skipped", path)
        return out

    @staticmethod
    def done(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
