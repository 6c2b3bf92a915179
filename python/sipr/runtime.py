"""Runtime configuration (Kamailio's cfg framework) and loading the route
script, for `sipr run` and route-script reload.

`server.config` lists, reads and changes settings while sipr runs: each
takes effect at once (timers for transactions created from then on), no
restart. `load_app` imports the script given to `sipr run`; with
`fresh=True` it executes it again as a new module, so a reload gets new code
even when the module was imported before.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sipr.app import App

if TYPE_CHECKING:
    from sipr.server import Server

LOG_LEVELS = ("debug", "info", "warning", "error")


class AppLoadError(Exception):
    """The app could not be loaded: the message names the script and the problem."""


class ReloadError(AppLoadError):
    """A reload was refused; the running app stays in place."""


# --- loading the app ---------------------------------------------------------


def load_app(spec: str, *, fresh: bool = False) -> App:
    """Load APP given as `path/to/file.py` (attribute `app`) or `module:attr`.

    `fresh` executes the source again in a new module object, even if it was
    imported before (a reload); the module it replaces in `sys.modules` is
    put back if the new one fails."""
    attr = "app"
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise AppLoadError(f"app file not found: {spec}")
        name = f"sipr_app_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise AppLoadError(f"cannot load {spec}")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module = _execute(name, mod_spec, spec)
    else:
        modname, _, attr = spec.partition(":")
        attr = attr or "app"
        if fresh:
            try:
                mod_spec = importlib.util.find_spec(modname)
            except Exception as e:
                raise AppLoadError(f"{modname} failed to import: {describe(e)}") from e
            if mod_spec is None or mod_spec.loader is None:
                raise AppLoadError(f"{modname} failed to import: no such module")
            module = _execute(modname, mod_spec, modname)
        else:
            try:
                module = importlib.import_module(modname)
            except Exception as e:
                raise AppLoadError(f"{modname} failed to import: {describe(e)}") from e
    app = getattr(module, attr, None)
    if app is None:
        raise AppLoadError(f"{spec} has no attribute {attr!r} (expected a sipr.App)")
    if not isinstance(app, App):
        raise AppLoadError(f"{spec}:{attr} is a {type(app).__name__}, not a sipr.App")
    if app.route_handler is None:
        raise AppLoadError(f"{spec}: the app has no @app.route handler")
    return app


def _execute(name: str, mod_spec: Any, shown: str) -> ModuleType:
    """Runs a module's source in a new module object registered as `name`.

    The source is compiled from the file itself, never from a cached .pyc:
    a script edited twice within the same second (same size) must not come
    back as its old bytecode."""
    module = importlib.util.module_from_spec(mod_spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        origin = mod_spec.origin
        if origin and origin.endswith(".py"):
            code = compile(Path(origin).read_bytes(), origin, "exec")
            exec(code, module.__dict__)
        else:
            mod_spec.loader.exec_module(module)
    except BaseException as e:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        if isinstance(e, Exception):
            raise AppLoadError(f"{shown} failed to import: {describe(e)}") from e
        raise
    return module


def describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    return f"{type(e).__name__}: {e}"


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
            if isinstance(value, bool):
                raise ValueError
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value) if not isinstance(value, str) else int(value.strip())
            if self.type is float:
                number = float(value)  # type: ignore[arg-type]
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

    def __init__(self, server: Server) -> None:
        self._server = server
        self._settings: dict[str, Setting] = {}
        for key, what in (
            ("t1", "RFC 3261 T1 (RTT estimate): retransmit intervals, INVITE timeout 64*T1"),
            ("t2", "RFC 3261 T2: the longest retransmit interval"),
            ("t4", "RFC 3261 T4: how long a message stays in the network"),
            ("timer_c", "proxy INVITE timeout (Timer C) without a final answer"),
        ):
            self._add(
                f"tm.{key}",
                float,
                f"seconds, {what}; applies to new transactions",
                self._timer_reader(key),
                self._timer_writer(key),
                low=0.001,
                high=86_400,
            )
        self._add(
            "tm.route_deadline",
            float,
            "seconds a route handler may run before it is cancelled (new requests)",
            lambda: server.route_deadline,
            lambda v: setattr(server, "route_deadline", v),
            low=0.001,
            high=86_400,
        )
        self._add(
            "core.max_pending",
            int,
            "requests the app may hold before the core answers 503 + Retry-After",
            lambda: server.core_setting("max_pending"),
            lambda v: server.set_core_setting("max_pending", v),
            low=1,
            high=10_000_000,
        )
        self._add(
            "core.retry_after",
            int,
            "seconds in the Retry-After of the core's 503 (overload, shutdown)",
            lambda: server.core_setting("retry_after"),
            lambda v: server.set_core_setting("retry_after", v),
            low=0,
            high=86_400,
        )
        self._add(
            "core.default_reply",
            int,
            "status sent when a handler returns without acting",
            lambda: server.default_reply[0],
            lambda v: setattr(server, "default_reply", (v, None)),
            low=200,
            high=699,
        )
        self._add(
            "dns.blocklist_time",
            float,
            "seconds a destination that timed out or was unreachable is tried last (0: off)",
            lambda: server.dns_setting("blocklist_time"),
            lambda v: server.set_dns_setting("blocklist_time", v),
            low=0,
            high=86_400,
        )
        self._add(
            "dns.failover_timeout",
            float,
            "seconds a destination with alternatives may stay silent before the next is tried",
            lambda: server.dns_setting("failover_timeout"),
            lambda v: server.set_dns_setting("failover_timeout", v),
            low=0,
            high=86_400,
        )
        self._add(
            "log.level",
            str,
            "log level: debug, info, warning, error",
            lambda: logging.getLevelName(logging.getLogger().level).lower(),
            lambda v: logging.getLogger().setLevel(v.upper()),
            choices=LOG_LEVELS,
        )
        self._add(
            "watchdog.stall_threshold",
            float,
            "seconds the event loop may be blocked before a stall is logged",
            lambda: server.stall_threshold,
            server.set_stall_threshold,
            low=0.001,
            high=3600,
        )
        self._add(
            "shutdown.drain_timeout",
            float,
            "seconds SIGTERM waits for in-flight transactions before exiting",
            lambda: server.drain_timeout,
            lambda v: setattr(server, "drain_timeout", v),
            low=0,
            high=86_400,
        )

    def _add(self, name: str, typ: type, description: str, read, apply, **bounds) -> None:  # type: ignore[no-untyped-def]
        self._settings[name] = Setting(name, typ, description, read, apply, **bounds)

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
