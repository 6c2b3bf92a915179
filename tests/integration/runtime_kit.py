"""Helpers of the runtime tests (cfg, reload, drain, logs) around
tests/apps/runtime_proxy.py and its magic OPTIONS requests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.conftest import ROOT, Sipr, header, options_over_tcp, status_of

APP = ROOT / "tests" / "apps" / "runtime_proxy.py"


def copy_app(folder: Path, version: str = "1") -> Path:
    """The test app as a script of our own, for a reload to rewrite."""
    path = folder / "route_script.py"
    shutil.copy(APP, path)
    set_version(path, version)
    return path


def set_version(path: Path, version: str, extra: str = "") -> None:
    text = APP.read_text().replace('VERSION = "1"', f'VERSION = "{version}"')
    path.write_text(text + extra)


def ask(addr: tuple[str, int], user: str, extra: str = "") -> bytes:
    """`OPTIONS sip:USER@addr` over TCP; returns the response."""
    return options_over_tcp(addr, user, extra)


def cfg_set(addr: tuple[str, int], name: str, value: str) -> str:
    """`app.config.set(name, value)` inside the running app; returns the new value."""
    resp = ask(addr, "cfg", f"X-Set: {name}={value}\r\n")
    assert status_of(resp) == 200, resp
    return header(resp, "X-Value") or ""


def version(addr: tuple[str, int]) -> str | None:
    return header(ask(addr, "version"), "X-Version")


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Polls `predicate` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_log(proc: Sipr, text: str, timeout: float = 15.0) -> str:
    """The first log line containing `text` (bounded wait)."""

    def find() -> str | None:
        return next((line for line in list(proc.output) if text in line), None)

    return wait_for(find, timeout, f"log line {text!r} in:\n{proc.log()}")
