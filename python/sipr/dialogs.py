"""`app.dialogs`: the dialogs the routes track (Kamailio's `dialog` module).

A route marks a dialog-creating INVITE with `req.track_dialog(...)`; the core
then follows the dialog in Rust (early, confirmed, terminated; forks,
re-INVITE/UPDATE, BYE), ends it when its lifetime runs out or a keepalive
fails (BYE to both sides), and counts it in its profiles while it lives:

```python
@app.route
async def route(req):
    if req.method == "INVITE":
        user = req.from_.uri.user
        if app.dialogs.count("user", user) >= 2:
            return req.reply(486, "Busy Here")        # call limit
        req.track_dialog(profiles=[("user", user)], timeout=3600, keepalive=30)
    await req.relay(...)
```

Counts are this process's (decision 0037 says how they become shared in
Redis for several workers and hosts). See docs/dialogs.md.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sipr._core import DialogTable
    from sipr._protocols import AppLike

from sipr.settings import DialogSettings, default

#: Kamailio's `default_timeout`: a confirmed dialog lives 12 hours unless told.
DEFAULT_TIMEOUT: float = default(DialogSettings, "default_timeout")


class Dialogs:
    """The running core's dialog table, with settings applied at start.

    `max_dialogs` bounds the table (a route's `track_dialog` beyond it raises
    `sipr.DialogError`); `default_timeout` is the lifetime of a confirmed
    dialog whose route gave none; `setup_timeout` drops a dialog whose INVITE
    never got a final answer (beyond Timer C).
    """

    def __init__(self, app: AppLike) -> None:
        self._app = app
        self.max_dialogs: int = default(DialogSettings, "max_dialogs")
        self.default_timeout: float = DEFAULT_TIMEOUT
        self.setup_timeout: float = default(DialogSettings, "setup_timeout")
        self._table: DialogTable | None = None
        self._table_core: object | None = None
        app.startup.append(self._configure)
        # A drain waits (within its bound) for calls in progress to end.
        app.drain_checks.append(self.confirmed)

    async def _configure(self) -> None:
        table = self.table()
        if table is None:
            # A reload starts the new app's services before handing it the
            # core; the running table keeps its settings until then.
            asyncio.get_running_loop().call_soon(self._configure_when_served)
            return
        self._apply(table)

    def _configure_when_served(self) -> None:
        table = self.table()
        if table is not None:
            self._apply(table)

    def _apply(self, table: DialogTable) -> None:
        # The settings class checks each against its bounds (ValueError).
        settings = DialogSettings(
            max_dialogs=int(self.max_dialogs),
            default_timeout=float(self.default_timeout),
            setup_timeout=float(self.setup_timeout),
        )
        table.configure(
            max_dialogs=settings.max_dialogs,
            default_timeout=settings.default_timeout,
            setup_timeout=settings.setup_timeout,
        )

    def table(self) -> DialogTable | None:
        """The native table of the running core (None while not served)."""
        core = self._app._core
        if core is None:
            return None
        if self._table_core is not core:
            self._table = core.dialogs()
            self._table_core = core
        return self._table

    def count(self, profile: str, value: object = None) -> int:
        """Live dialogs in `profile` with `value` (any value when None)."""
        table = self.table()
        return 0 if table is None else table.count(profile, None if value is None else str(value))

    def __len__(self) -> int:
        table = self.table()
        return 0 if table is None else len(table)

    def list(self) -> list[dict[str, Any]]:
        """Every tracked dialog (id, state, caller, callee, age, ...), oldest first."""
        table = self.table()
        return [] if table is None else table.list()

    def get(self, dialog_id: str) -> dict[str, Any] | None:
        table = self.table()
        return None if table is None else table.get(dialog_id)

    def end(self, dialog_id: str) -> bool:
        """Ends a confirmed dialog: a BYE to each side, its CDR with reason
        "admin". False when no confirmed dialog has this id."""
        table = self.table()
        return False if table is None else table.end(dialog_id)

    def profiles(self) -> builtins.list[tuple[str, str, int]]:
        """(profile, value, live dialogs) for every value in use."""
        table = self.table()
        return [] if table is None else table.profiles()

    def confirmed(self) -> int:
        table = self.table()
        if table is None:
            return 0
        return dict(table.stats()).get("dialogs.confirmed", 0)

    def stats(self) -> dict[str, int]:
        table = self.table()
        return {} if table is None else dict(table.stats())
