"""`sipr.Dispatcher` (Kamailio `dispatcher`): sets of destinations loaded
from a list file or the store, a selection per request done in the core,
OPTIONS probing, and control commands.

    ds = sipr.Dispatcher("sqlite:///var/lib/sipr/dispatcher.db", app=app, probe_interval=10)

    @app.route
    async def route(req):
        await req.relay(ds.targets(set=1, algo="hash-callid"))

`ds.targets()` is evaluated by `req.relay()` against the request (hash of
its Call-ID, From user or R-URI, round-robin, weight, priority, random); the
relay tries the destinations one after another, moving on when one times
out, is unreachable or answers one of `codes` (408, 500, 502, 503, 504 by
default). Operator page: docs/dispatcher.md.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import weakref
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from sipr import _core

log = logging.getLogger("sipr.dispatcher")

Row = tuple[int, str, int, int, str]

#: Kamailio's `dispatcher` table (db_url), so its rows can be copied as they are.
SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatcher (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    setid INTEGER NOT NULL DEFAULT 0,
    destination TEXT NOT NULL DEFAULT '',
    flags INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
)
"""


class DispatcherError(Exception):
    """The destination source cannot be read: the message names it and why."""


class Dispatcher:
    instances: ClassVar[weakref.WeakSet[Dispatcher]] = weakref.WeakSet()

    def __init__(
        self,
        source: str | Path | None = None,
        *,
        sets: list[Row] | None = None,
        app: Any = None,
        probe_interval: float | None = None,
        probe_timeout: float | None = None,
        fail_threshold: int = 1,
        ok_threshold: int = 1,
        alive_codes: tuple[int, ...] | list[int] = (),
        probe_from: str = "sip:dispatcher@localhost",
    ) -> None:
        """`source`: a list file (`path`, `file:///path`: Kamailio's
        `setid destination [flags [priority [attrs]]]` lines) or a store
        (`sqlite:///path.db`, Kamailio's `dispatcher` table); or give the
        rows as `sets=[(set, uri, flags, priority, attrs), ...]`.

        With `app` and `probe_interval`, every destination gets an OPTIONS
        each interval; `fail_threshold` failures in a row make it inactive,
        `ok_threshold` answers make it active again. Every 2xx counts as
        alive, and so do `alive_codes`."""
        if source is None and sets is None:
            raise ValueError("Dispatcher needs a source (list file or sqlite:// URL) or sets=")
        self.source = str(source) if source is not None else None
        self._rows = list(sets or [])
        self.native = _core.Dispatcher()
        if probe_interval is not None and probe_interval <= 0:
            raise ValueError("probe_interval must be positive seconds")
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.fail_threshold = max(1, int(fail_threshold))
        self.ok_threshold = max(1, int(ok_threshold))
        self.alive_codes = [int(c) for c in alive_codes]
        self.probe_from = probe_from
        self.app = app  # a sipr.App (not imported: no import circle with sipr.app)
        self.load()
        Dispatcher.instances.add(self)
        if app is not None:
            app.on_startup(self._start)
            app.on_shutdown(self._stop)
            for name, fn in (
                ("dispatcher.list", self._rpc_list),
                ("dispatcher.set_state", self._rpc_set_state),
                ("dispatcher.reload", self._rpc_reload),
            ):
                app.rpc(name)(fn)

    # -- loading -----------------------------------------------------------

    def read(self) -> list[Row]:
        """The rows of the source as they are now (DispatcherError if unreadable)."""
        if self.source is None:
            return list(self._rows)
        parts = urlsplit(self.source)
        if parts.scheme == "sqlite":
            return _read_sqlite(_sqlite_path(self.source))
        path = Path(parts.path if parts.scheme == "file" else self.source)
        try:
            text = path.read_text()
        except OSError as e:
            raise DispatcherError(f"dispatcher list {path}: {e.strerror or e}") from e
        try:
            return _core.Dispatcher.parse_list(text)
        except ValueError as e:
            raise DispatcherError(f"dispatcher list {path}: {e}") from e

    def load(self) -> int:
        """(Re)loads the sets; destinations already known keep their state,
        calls in progress keep their targets. Returns the destination count."""
        rows = self.read()
        try:
            n = self.native.load(rows)
        except ValueError as e:
            raise DispatcherError(f"dispatcher {self.source or 'sets'}: {e}") from e
        log.info("dispatcher: %d destination(s) in %d set(s)", n, len({r[0] for r in rows}))
        return n

    async def reload(self) -> int:
        return self.load()

    # -- the store -----------------------------------------------------------

    def add(self, set: int, uri: str, flags: int = 0, priority: int = 0, attrs: str = "") -> None:
        """Adds a destination to the store or the in-memory rows (reload to apply)."""
        if self.source is not None and urlsplit(self.source).scheme == "sqlite":
            with _connect(_sqlite_path(self.source)) as db:
                db.execute(
                    "INSERT INTO dispatcher (setid, destination, flags, priority, attrs)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (set, uri, flags, priority, attrs),
                )
        elif self.source is None:
            self._rows.append((set, uri, flags, priority, attrs))
        else:
            raise DispatcherError("add() works on a sqlite:// store or sets=; edit the list file")

    def remove(self, uri: str, set: int | None = None) -> int:
        """Removes destinations from the store or rows (reload to apply)."""
        if self.source is not None and urlsplit(self.source).scheme == "sqlite":
            with _connect(_sqlite_path(self.source)) as db:
                if set is None:
                    cur = db.execute("DELETE FROM dispatcher WHERE destination = ?", (uri,))
                else:
                    cur = db.execute(
                        "DELETE FROM dispatcher WHERE destination = ? AND setid = ?", (uri, set)
                    )
                return cur.rowcount
        if self.source is None:
            before = len(self._rows)
            self._rows = [r for r in self._rows if not (r[1] == uri and set in (None, r[0]))]
            return before - len(self._rows)
        raise DispatcherError("remove() works on a sqlite:// store or sets=; edit the list file")

    # -- selection -------------------------------------------------------------

    def targets(
        self,
        set: int,
        algo: str = "round-robin",
        *,
        limit: int | None = None,
        codes: list[int] | None = None,
    ) -> _core.Selection:
        """What `req.relay()` takes: the active destinations of `set` in the
        order `algo` gives for that request, tried one after another."""
        return self.native.targets(set, algo, limit=limit, codes=codes)

    def select(self, req: _core.Request, set: int, algo: str = "round-robin") -> list[str]:
        """The destination URIs `req` would try, in order."""
        return self.native.select(req, set, algo)

    def list(self) -> list[dict[str, Any]]:
        return self.native.list()

    def set_state(self, uri: str, state: str, set: int | None = None) -> int:
        return self.native.set_state(uri, state, set)

    def stats(self) -> dict[str, float]:
        rows = self.native.list()
        reloads, empty = self.native.counters()
        out: dict[str, float] = {
            "dispatcher.reloads": reloads,
            "dispatcher.no_destination": empty,
        }
        for state in ("active", "inactive", "disabled"):
            out[f"dispatcher.destinations.{state}"] = sum(r["state"] == state for r in rows)
        for r in rows:
            key = f"{r['set']}/{r['uri']}"
            out[f"dispatcher.selected.{key}"] = r["selected"]
            out[f"dispatcher.up.{key}"] = int(r["state"] == "active")
        return out

    # -- service life cycle and control -----------------------------------------

    async def _start(self) -> None:
        if self.probe_interval is None or self.app is None:
            return
        core = self.app._core
        assert core is not None, "Dispatcher: the app is not running"
        self.native.start_probing(
            core.dns(),
            interval=self.probe_interval,
            timeout=self.probe_timeout or min(self.probe_interval, 5.0),
            fail_threshold=self.fail_threshold,
            ok_threshold=self.ok_threshold,
            alive_codes=self.alive_codes,
            from_uri=self.probe_from,
        )
        log.info("dispatcher: probing every %gs", self.probe_interval)

    async def _stop(self) -> None:
        self.native.stop_probing()

    async def _rpc_list(self) -> builtins.list[dict[str, Any]]:
        """Dispatcher destinations: set, URI, state, probes, selections."""
        return self.list()

    async def _rpc_set_state(self, uri: str, state: str, set: int | None = None) -> dict[str, Any]:
        """Sets a destination active, inactive or disabled: URI STATE [SET]."""
        changed = self.set_state(uri, state, None if set is None else int(set))
        if not changed:
            raise ValueError(
                f"no destination {uri}" + (f" in set {set}" if set is not None else "")
            )
        return {"uri": uri, "state": state, "changed": changed}

    async def _rpc_reload(self) -> dict[str, Any]:
        """Re-reads the destination sets from the list file or the store."""
        try:
            n = await self.reload()
        except DispatcherError as e:
            raise ValueError(f"reload refused, the running sets stay: {e}") from e
        return {"reloaded": True, "destinations": n}


def stats() -> dict[str, float]:
    """Every dispatcher's statistics (for `stats.get` and `/metrics`)."""
    out: dict[str, float] = {}
    for ds in list(Dispatcher.instances):
        out.update(ds.stats())
    return out


def _sqlite_path(url: str) -> str:
    path = urlsplit(url).path
    if not path:
        raise DispatcherError(f"{url}: expected sqlite:///path/to/dispatcher.db")
    return path


def _connect(path: str) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path)
        db.execute(SCHEMA)
    except sqlite3.Error as e:
        raise DispatcherError(f"dispatcher store {path}: {e}") from e
    return db


def _read_sqlite(path: str) -> list[Row]:
    db = _connect(path)
    try:
        rows = db.execute(
            "SELECT setid, destination, flags, priority, attrs FROM dispatcher ORDER BY id"
        ).fetchall()
    except sqlite3.Error as e:
        raise DispatcherError(f"dispatcher store {path}: {e}") from e
    finally:
        db.close()
    return [(int(s), str(d), int(f), int(p), str(a or "")) for s, d, f, p, a in rows]
