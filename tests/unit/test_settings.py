"""Settings (issue 13): each default written once, in sipr.settings (or the
Rust core for the core's own), and documented from there: docs/settings.md,
`sipr run --help` and `App(...)` all show the same values."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

import sipr
from sipr import _core
from sipr.settings import (
    ALL,
    ConnectionSettings,
    CoreSettings,
    RunSettings,
    TimerSettings,
    TlsSettings,
    markdown,
)
from tests.conftest import ROOT


def test_docs_settings_md_holds_the_generated_tables() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    assert markdown() in text, "docs/settings.md is stale: python -m sipr.settings prints it"


def test_run_help_shows_every_flag_with_its_help_and_default() -> None:
    env = {**os.environ, "COLUMNS": "400", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "sipr", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    shown = " ".join(out.stdout.split())
    flags = 0
    for cls in ALL:
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            if flag is None:
                continue
            flags += 1
            assert flag in shown
            assert " ".join(f.metadata["help"].split()) in shown, flag
            if isinstance(f.default, int | float) and not isinstance(f.default, bool):
                assert f"{flag} " in shown and f"[default: {f.default}]" in shown, flag
    assert flags >= 15


def test_the_core_defaults_come_from_the_rust_core() -> None:
    rust = _core.core_defaults()
    app = sipr.App()
    assert app.max_pending == rust["max_pending"] == CoreSettings().max_pending
    assert app.retry_after == rust["retry_after"]
    assert app.timers == {k: rust[k] for k in ("t1", "t2", "t4", "timer_c")}  # type: ignore[literal-required]  # keys checked by the comprehension
    assert ConnectionSettings().max_connections == rust["max_connections"]
    assert ConnectionSettings().connect_timeout == rust["connect_timeout"]


def test_app_arguments_override_and_unknown_timers_are_refused() -> None:
    app = sipr.App(max_pending=7, timers={"t1": 0.05})
    assert app.core_settings.max_pending == 7
    assert app.timer_settings == dataclasses.replace(TimerSettings(), t1=0.05)
    with pytest.raises(ValueError, match=r"unknown timer\(s\) \['t3'\]"):
        sipr.App(timers={"t3": 1.0})
    with pytest.raises(ValueError, match="max_pending must be 1 to 1e"):
        sipr.App(max_pending=0)


def test_bad_values_are_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--max-connections must be 1 to"):
        ConnectionSettings(max_connections=0)
    with pytest.raises(ValueError, match="--log-format must be one of text, json, got 'xml'"):
        RunSettings(log_format="xml")
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        TlsSettings(cert=ROOT / "README.md")
