"""The statistics `stats.get` and `/metrics` report, as one flat
`group.name → number` dict gathered from the core, the serving loop, the
registrars and /proc."""

from __future__ import annotations

import os
import time
import weakref

from sipr._protocols import ServerView
from sipr.dispatcher import stats as dispatcher_stats
from sipr.registrar import Registrar
from sipr.store import Store

#: Registrations are counted by walking the stores; a scrape every second
#: should not walk a large redis store every second.
REGISTRATIONS_CACHE_SECONDS = 2.0


def registrars() -> list[Registrar]:
    return list(Registrar.instances)


def stores() -> list[Store]:
    """The distinct stores behind the app's registrars (two registrars often share one)."""
    seen: dict[int, Store] = {}
    for r in registrars():
        seen.setdefault(id(r.store), r.store)
    return list(seen.values())


_registrations: weakref.WeakKeyDictionary[Store, tuple[float, int, int]] = (
    weakref.WeakKeyDictionary()
)


async def count_registrations() -> tuple[int, int]:
    """(AoRs, bindings) over every registrar's store."""
    aors = bindings = 0
    now = time.monotonic()
    for store in stores():
        cached = _registrations.get(store)
        if cached is None or now - cached[0] > REGISTRATIONS_CACHE_SECONDS:
            names = await store.aors()
            n = sum([len(await store.bindings(a)) for a in names])
            cached = (now, len(names), n)
            _registrations[store] = cached
        aors += cached[1]
        bindings += cached[2]
    return aors, bindings


def forget_registration_counts() -> None:
    """After `ul.rm`: the next count walks the stores again."""
    _registrations.clear()


def proc_status() -> dict[str, int]:
    """RSS and thread count from /proc/self/status (Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    out["process.rss_bytes"] = int(value.split()[0]) * 1024
                elif key == "Threads":
                    out["process.threads"] = int(value)
    except OSError:
        pass
    return out


async def collect(server: ServerView, started: float) -> dict[str, float]:
    """Every statistic, flat. Keys without a group from the core (`pending`,
    `parse_errors`, …) are put under `core.`."""
    out: dict[str, float] = {}
    for key, value in server.app.stats().items():
        out[key if "." in key else f"core.{key}"] = value
    watchdog = server.watchdog
    if watchdog is not None:
        out["loop.lag_ms"] = round(watchdog.lag * 1000, 3)
    aors, bindings = await count_registrations()
    out["registrations.aors"] = aors
    out["registrations.bindings"] = bindings
    out.update(dispatcher_stats())
    out.update(proc_status())
    out["process.uptime_seconds"] = round(time.monotonic() - started, 3)
    out["process.pid"] = os.getpid()
    return out
