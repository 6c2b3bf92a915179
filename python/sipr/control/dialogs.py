"""Control methods of the dialog module (Kamailio `dlg.*` RPC names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipr.control.rpc import APP_ERROR, Registry, RpcError

if TYPE_CHECKING:
    from sipr.dialogs import Dialogs


def register(registry: Registry, server: Any) -> None:
    def dialogs() -> Dialogs:
        if server.core is None:
            raise RpcError(APP_ERROR, "the core is not running")
        table: Dialogs = server.app.dialogs
        return table

    async def dlg_list() -> list[dict[str, Any]]:
        """Dialogs in progress: id, state, caller, callee, age and talk time (s)."""
        return [
            {
                "id": d["id"],
                "state": d["state"],
                "caller": d["caller"],
                "callee": d["callee"],
                "age": d["age"],
                "duration": d["duration"],
                "profiles": ",".join(d["profiles"]),
                "call_id": d["call_id"],
            }
            for d in dialogs().list()
        ]

    async def dlg_get(dialog_id: str) -> dict[str, Any]:
        """Everything known about one dialog (tags, source, destination, timers)."""
        try:
            d = dialogs().get(str(dialog_id))
        except ValueError as e:
            raise RpcError(APP_ERROR, str(e)) from e
        if d is None:
            raise RpcError(APP_ERROR, f"no dialog {dialog_id}")
        return d

    async def dlg_end(dialog_id: str) -> dict[str, Any]:
        """Ends a confirmed dialog: BYE to caller and callee, CDR reason "admin"."""
        try:
            ended = dialogs().end(str(dialog_id))
        except ValueError as e:
            raise RpcError(APP_ERROR, str(e)) from e
        if not ended:
            raise RpcError(APP_ERROR, f"no confirmed dialog {dialog_id}")
        return {"id": dialog_id, "ended": True}

    async def dlg_stats() -> dict[str, int]:
        """Dialogs by state, created, answered, failed, ended by reason, bytes per dialog."""
        return {
            k.split(".", 1)[1]: v for k, v in dialogs().stats().items() if k.startswith("dialogs.")
        }

    async def dlg_profiles() -> list[dict[str, Any]]:
        """Profiles in use: name, value, live dialogs."""
        return [{"profile": n, "value": v, "dialogs": c} for n, v, c in dialogs().profiles()]

    registry.add("dlg.list", dlg_list)
    registry.add("dlg.get", dlg_get)
    registry.add("dlg.end", dlg_end)
    registry.add("dlg.stats", dlg_stats)
    registry.add("dlg.profiles", dlg_profiles)
