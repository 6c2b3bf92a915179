"""A worker process as the supervisor tracks it (`sipr.workers.supervisor`)
and its control plane reads it (`sipr.workers.control`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    #: Wall clock of the start, for `workers` (uptime) and the restart bound.
    started_wall: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ctl: Path = Path()
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Holder:
    """Whose output a process's stderr is: a worker's, or nobody's yet (the
    standby, until it takes a worker's place)."""

    worker: Worker | None = None
