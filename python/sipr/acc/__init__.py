"""Accounting (Kamailio's `acc`): request records and CDRs written to SQLite,
PostgreSQL or JSON lines, in batches, off the routing path.

```python
app = sipr.App()
sipr.Accounting("postgresql://sipr@db/sipr").serve(app)   # default: SQLite in the data dir

@app.route
async def route(req):
    if req.method == "INVITE":
        req.track_dialog(cdr={"account": "acme"})   # a CDR when the dialog ends
    req.account()                                     # a record when it is answered
    await req.relay(...)
```

The core queues records as transactions and dialogs finish and signals a
descriptor when the queue fills from empty; a collector then waits `interval`
seconds for a batch to gather, takes them all, and a writer task sends them
in batches (no wake-up at all while idle).
While the database is unreachable the writer retries with back-off, keeps up
to `max_pending` records in memory and moves the rest to a bounded on-disk
spool; at shutdown (SIGTERM) what is unwritten goes to the spool too, and
the next start writes it. Record ids are primary keys written with "ignore
duplicates", so a retried batch lands once. See docs/accounting.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipr.acc.spool import Spool, spool_dir_for
from sipr.acc.writers import AccountingError, Writer, default_url, open_writer
from sipr.settings import AccountingSettings, default

if TYPE_CHECKING:
    from sipr.app import App

log = logging.getLogger("sipr.acc")

#: The collector's fallback poll when no signal came.
POLL_SECONDS = 1.0

#: Collectors waiting on the core's records descriptor. Two apps' Accounting
#: overlap during a reload; asyncio keeps one reader per descriptor.
_watchers: dict[int, set[asyncio.Event]] = {}


def _watch(fd: int, table: Any, ready: asyncio.Event) -> None:
    events = _watchers.get(fd)
    if events is None:
        events = _watchers[fd] = set()

        def on_records() -> None:
            table.clear_records_signal()
            for e in events:
                e.set()

        asyncio.get_running_loop().add_reader(fd, on_records)
    events.add(ready)


def _unwatch(fd: int, ready: asyncio.Event) -> None:
    events = _watchers.get(fd)
    if events is None:
        return
    events.discard(ready)
    if not events:
        del _watchers[fd]
        asyncio.get_running_loop().remove_reader(fd)


__all__ = ["Accounting", "AccountingError", "default_url"]


class Accounting:
    """Writes the core's accounting records to `url` (see `sipr.acc.writers`)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = default(AccountingSettings, "batch_size"),
        interval: float = default(AccountingSettings, "interval"),
        max_pending: int = default(AccountingSettings, "max_pending"),
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = default(AccountingSettings, "spool_max_bytes"),
        retry_max: float = default(AccountingSettings, "retry_max"),
        flush_timeout: float = default(AccountingSettings, "flush_timeout"),
    ) -> None:
        # Checks each against its bounds (ValueError naming it).
        self.settings = AccountingSettings(
            batch_size=batch_size,
            interval=interval,
            max_pending=max_pending,
            spool_max_bytes=spool_max_bytes,
            retry_max=retry_max,
            flush_timeout=flush_timeout,
        )
        self.url = url or default_url()
        self.writer: Writer = open_writer(self.url)
        self.spool = Spool(
            Path(spool_dir) if spool_dir else spool_dir_for(self.url), spool_max_bytes
        )
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.retry_max = retry_max
        self.flush_timeout = flush_timeout
        self.written = 0
        self.write_errors = 0
        self.spooled = 0
        self.replayed = 0
        self.healthy = True
        self._pending: deque[dict[str, Any]] = deque()
        self._inflight: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._app: App | None = None

    def serve(self, app: App) -> Accounting:
        """Writes `app`'s records while it is served."""
        self._app = app
        app.startup.append(self._start)
        app.shutdown.append(self._stop)
        app.stat_hooks.append(self.stats)
        app.drain_checks.append(self.in_flight)
        return self

    # -- life cycle -----------------------------------------------------------

    def _table(self) -> Any:
        assert self._app is not None
        return self._app.dialogs.table()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks = [
            loop.create_task(self._collect(), name="sipr-acc-collect"),
            loop.create_task(self._write_loop(), name="sipr-acc-write"),
        ]

    async def _stop(self) -> None:
        table = self._table()
        if not self._tasks:
            return
        if table is None:  # never served
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            return
        # Stopped by a reload (the app is retired, the server goes on), the
        # new app's Accounting takes over: calls stay up and records flow.
        server = getattr(self._app, "_server", None)
        final = server is None or server.stopping.is_set()
        collector, writer = self._tasks
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        if final:
            left = table.end_all()
            if left:
                log.info("accounting: %d dialog(s) still up at shutdown get a CDR", left)
            self._take()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_timeout
        while self.healthy and (self._pending or self._inflight) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if final:
            self._take()  # on a reload, the new app's collector takes them
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            if self.spool.put(batch):
                self.spooled += len(batch)
                log.warning(
                    "accounting: %d record(s) not written to %s at shutdown: spooled in %s",
                    len(batch),
                    self.writer.url,
                    self.spool.dir,
                )
        if final:
            table.configure(accounting=False)
        self._tasks = []
        await self.writer.close()

    # -- the two tasks --------------------------------------------------------

    def _take(self) -> None:
        table = self._table()
        while True:
            records = table.take_records(50_000)
            if not records:
                break
            self._pending.extend(records)
        if len(self._pending) > self.max_pending:
            # The database is behind or away: memory stays bounded, the
            # rest waits on disk.
            batch = list(self._pending)
            self._pending.clear()
            if self.spool.put(batch):
                self.spooled += len(batch)
        if self._pending and self._wake is not None:
            self._wake.set()

    async def _collect(self) -> None:
        """Wakes when the core signals records (nothing runs while idle),
        lets a batch gather for `interval`, then takes them all."""
        # A reload starts the new app's services before handing it the core.
        while self._table() is None:
            await asyncio.sleep(0.05)
        table = self._table()
        table.configure(accounting=True)
        log.info("accounting: records go to %s", self.writer.url)
        if self.spool.files():
            log.info("accounting: spooled records from an earlier run to write")
            assert self._wake is not None
            self._wake.set()
        fd = table.records_fd()
        ready = asyncio.Event()
        if fd is not None:
            _watch(fd, table, ready)
        try:
            while True:
                if fd is not None:
                    # A slow poll as well, so no record can wait on a lost
                    # wake-up (one Python wake a second while idle).
                    try:
                        await asyncio.wait_for(ready.wait(), POLL_SECONDS)
                    except TimeoutError:
                        pass
                    ready.clear()
                await asyncio.sleep(self.interval)
                try:
                    self._take()
                except Exception:
                    log.exception("accounting: collecting records failed")
        finally:
            if fd is not None:
                _unwatch(fd, ready)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        backoff = 0.1
        while True:
            if not self._pending and not (self.healthy and self.spool.files()):
                self._wake.clear()
                # Away with records on disk: try again after the back-off;
                # else look at the spool now and then (another instance may
                # have spooled records, e.g. the app a reload replaced).
                timeout = backoff if not self.healthy and self.spool.files() else POLL_SECONDS
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            try:
                if self._pending:
                    n = min(self.batch_size, len(self._pending))
                    self._inflight = [self._pending.popleft() for _ in range(n)]
                    try:
                        await self.writer.write(self._inflight)
                    except BaseException:
                        self._pending.extendleft(reversed(self._inflight))
                        raise
                    finally:
                        done, self._inflight = len(self._inflight), []
                    self.written += done
                elif self.spool.files():
                    await self._replay(self.spool.files()[0])
                else:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.write_errors += 1
                if self.healthy:
                    log.error(
                        "accounting: writing to %s failed (%s: %s); retrying, records are "
                        "kept (spooled in %s beyond %d)",
                        self.writer.url,
                        type(e).__name__,
                        e,
                        self.spool.dir,
                        self.max_pending,
                    )
                self.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max)
                continue
            if not self.healthy:
                log.info("accounting: %s is back; writing again", self.writer.url)
            self.healthy = True
            backoff = 0.1

    async def _replay(self, path: Path) -> None:
        records = Spool.read(path)
        for i in range(0, len(records), self.batch_size):
            await self.writer.write(records[i : i + self.batch_size])
        Spool.done(path)
        self.replayed += len(records)
        log.info("accounting: %d spooled record(s) written from %s", len(records), path.name)

    # -- observation ----------------------------------------------------------

    def in_flight(self) -> int:
        """Records not yet written, for the shutdown drain (none counted while
        the database is away: those go to the spool instead of holding it)."""
        if not self.healthy:
            return 0
        table = self._table()
        queued = table.queued_records() if table is not None else 0
        return len(self._pending) + len(self._inflight) + queued

    def stats(self) -> dict[str, int]:
        files = self.spool.files()
        return {
            "acc.written": self.written,
            "acc.write_errors": self.write_errors,
            "acc.pending": len(self._pending) + len(self._inflight),
            "acc.spooled": self.spooled,
            "acc.replayed": self.replayed,
            "acc.spool_files": len(files),
            "acc.spool_dropped": self.spool.dropped,
            "acc.healthy": int(self.healthy),
        }
