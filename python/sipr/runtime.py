"""Runtime configuration (Kamailio's cfg framework): `server.config` lists,
reads and changes settings while sipr runs; each takes effect at once
(timers for transactions created from then on), no restart. Names,
descriptions and bounds come from `sipr.settings` (docs/settings.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sipr import corelog
from sipr._protocols import ServerView
from sipr.loader import AppLoadError, ReloadError
from sipr.settings import (
    CoreSettings,
    DnsSettings,
    RouteSettings,
    RunSettings,
    TimerSettings,
    meta,
)

__all__ = ["AppLoadError", "ReloadError", "RuntimeConfig", "Setting"]


# --- runtime settings ----------------------------------------------------------


@dataclass
class Setting:
    name: str
    type: type
    description: str
    read: Callable[[], Any]
    apply: Callable[[Any], None]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def coerce(self, value: object) -> Any:
        """`value` as this setting's type: strings such as "0.5", "5",
        "true" are accepted (they come from a command line)."""
        try:
            if self.type is bool:
                return _as_bool(value)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value) if not isinstance(value, str) else int(value.strip())
            if self.type is float:
                number = float(value)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError
                return number
            text = str(value).strip().lower()
            return text
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name}: expected {_type_name(self.type)}, got {value!r}"
            ) from None

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{self.name} must be at least {self.low:g}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{self.name} must be at most {self.high:g}, got {value!r}")


def _set_log_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    corelog.sync_level()


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false"}.get(t, "a string")


class RuntimeConfig:
    """The settings of a running server: `list()`, `get(name)`, `set(name, value)`."""

    def __init__(self, server: ServerView) -> None:
        self._server = server
        self._settings: dict[str, Setting] = {}
        for key in ("t1", "t2", "t4", "timer_c"):
            self._add(
                TimerSettings,
                key,
                float,
                self._timer_reader(key),
                self._timer_writer(key),
                "; applies to new transactions",
            )
        self._add(
            RouteSettings,
            "route_deadline",
            float,
            lambda: server.route_deadline,
            lambda v: setattr(server, "route_deadline", v),
            " (new requests)",
        )
        for key in ("max_pending", "retry_after"):
            self._add(
                CoreSettings,
                key,
                int,
                self._core_reader(key),
                self._core_writer(key),
            )
        self._add(
            RouteSettings,
            "default_reply",
            int,
            lambda: server.default_reply[0],
            lambda v: setattr(server, "default_reply", (v, None)),
            low=200,
            high=699,
        )
        self._add(
            DnsSettings,
            "blocklist_time",
            float,
            lambda: server.dns_setting("blocklist_time"),
            lambda v: server.set_dns_setting("blocklist_time", v),
        )
        self._add(
            DnsSettings,
            "failover_timeout",
            float,
            lambda: server.dns_setting("failover_timeout"),
            lambda v: server.set_dns_setting("failover_timeout", v),
        )
        self._add(
            RunSettings,
            "log_level",
            str,
            lambda: logging.getLevelName(logging.getLogger().level).lower(),
            _set_log_level,
        )
        self._add(
            RouteSettings,
            "stall_threshold",
            float,
            lambda: server.stall_threshold,
            server.set_stall_threshold,
        )
        self._add(
            RunSettings,
            "drain_timeout",
            float,
            lambda: server.drain_timeout,
            lambda v: setattr(server, "drain_timeout", v),
        )

    def _add(
        self,
        settings: type[Any],
        key: str,
        typ: type,
        read: Callable[[], Any],
        apply: Callable[[Any], None],
        note: str = "",
        *,
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        """Runtime setting for field `key` of a settings class: its cfg name,
        description, bounds and choices are the field's."""
        m = meta(settings, key)
        name = m["cfg"]
        self._settings[name] = Setting(
            name,
            typ,
            f"{m['help']}{note}",
            read,
            apply,
            low=m["low"] if low is None else low,
            high=m["high"] if high is None else high,
            choices=m["choices"],
        )

    def _core_reader(self, key: str) -> Callable[[], int]:
        return lambda: self._server.core_setting(key)

    def _core_writer(self, key: str) -> Callable[[int], None]:
        return lambda v: self._server.set_core_setting(key, v)

    def _timer_reader(self, key: str) -> Callable[[], float]:
        return lambda: self._server.timers()[key]

    def _timer_writer(self, key: str) -> Callable[[float], None]:
        return lambda v: self._server.set_timer(key, v)

    def _setting(self, name: object) -> Setting:
        setting = self._settings.get(str(name))
        if setting is None:
            raise ValueError(f"no such setting: {name!r} (see cfg.list)")
        return setting

    def list(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "value": s.read(),
                "type": s.type.__name__,
                "description": s.description,
            }
            for s in self._settings.values()
        ]

    def get(self, name: str) -> Any:
        return self._setting(name).read()

    def set(self, name: str, value: object) -> Any:
        """Changes a setting at once; returns its new value. A bad name or
        value raises ValueError naming the setting, and changes nothing."""
        setting = self._setting(name)
        new = setting.coerce(value)
        setting.check(new)
        setting.apply(new)
        now = setting.read()
        logging.getLogger("sipr.cfg").info("%s set to %r", name, now)
        return now
