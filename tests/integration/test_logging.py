"""Logs (issue 7): text or JSON lines, the Call-ID on every line about a
message (the app's own `logging` calls inside a handler included), the level
changeable at runtime."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import header, status_of
from tests.integration.runtime_kit import APP, ask, cfg_set, wait_for, wait_for_log


def _call_id_of_log_request(proxy) -> str:  # type: ignore[no-untyped-def]
    resp = ask(proxy.tcp, "log")
    call_id = header(resp, "Call-ID")
    assert call_id
    return call_id


def test_json_lines_carry_the_call_id_of_the_request(sipr_factory) -> None:
    proxy = sipr_factory(APP, extra_args=("--log-format", "json"))
    call_id = _call_id_of_log_request(proxy)
    assert cfg_set(proxy.tcp, "core.retry_after", "6") == "6"
    wait_for_log(proxy, "core.retry_after set to 6")
    assert proxy.stop() == 0
    records = [json.loads(line) for line in proxy.output if line.strip()]
    for r in records:
        assert {"ts", "level", "logger", "msg"} <= r.keys(), r
        assert r["ts"].endswith("Z") and r["level"] in ("debug", "info", "warning", "error")
    app_line = next(r for r in records if r["msg"] == "hello from the handler")
    assert app_line == {**app_line, "logger": "runtime_proxy", "level": "warning"}
    assert app_line["call_id"] == call_id
    cfg_line = next(r for r in records if "core.retry_after set to 6" in r["msg"])
    assert cfg_line["logger"] == "sipr.cfg" and cfg_line["call_id"] != call_id
    # Lines not about a message have no call_id.
    listening = [r for r in records if "listening on" in r["msg"]]
    assert len(listening) == 2 and all("call_id" not in r for r in listening)
    assert "call_id" not in next(r for r in records if "shutting down" in r["msg"])


def test_a_failing_handler_is_one_json_record_with_its_traceback(sipr_factory) -> None:
    proxy = sipr_factory(APP, extra_args=("--log-format", "json"))
    resp = ask(proxy.tcp, "boom")
    call_id = header(resp, "Call-ID")
    assert status_of(resp) == 500
    line = wait_for_log(proxy, "route handler failed")
    record = json.loads(line)
    assert record["level"] == "error" and record["call_id"] == call_id
    assert "RuntimeError: boom in the route" in record["exc"]
    assert "Traceback" in record["exc"] and "\n" not in line


def test_text_lines_show_the_call_id(sipr_factory) -> None:
    proxy = sipr_factory(APP)
    call_id = _call_id_of_log_request(proxy)
    line = wait_for_log(proxy, "hello from the handler")
    assert line.endswith(f"WARNING runtime_proxy: hello from the handler [Call-ID {call_id}]")


def test_log_level_changes_at_runtime(sipr_factory) -> None:
    proxy = sipr_factory(APP, extra_args=("--log-level", "warning"))
    assert cfg_set(proxy.tcp, "log.level", "error") == "error"
    _call_id_of_log_request(proxy)  # its warning is below the level now
    assert cfg_set(proxy.tcp, "log.level", "info") == "info"
    wait_for_log(proxy, "log.level set to 'info'")
    second = _call_id_of_log_request(proxy)
    wait_for(
        lambda: any(second in line for line in proxy.output if "hello" in line),
        what="the second warning",
    )
    assert sum("hello from the handler" in line for line in proxy.output) == 1, proxy.log()
    # The info line about the first change (to error) was not written: below warning.
    assert "log.level set to 'error'" not in proxy.log()


def test_bad_log_format_is_one_error_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sipr", "run", str(APP), "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == "sipr: error: --log-format must be one of text, json, got 'xml'"


OWN_LOGGING = """
import logging

import sipr

logging.basicConfig(format="own %(levelname)s %(call_id)s %(message)s")
app = sipr.App()


@app.route
async def route(req: sipr.Request) -> None:
    logging.getLogger("mine").warning("handled")
    req.reply(200)
"""


def test_an_app_with_its_own_logging_setup_keeps_it_and_gets_the_call_id(
    sipr_factory, tmp_path
) -> None:
    script = tmp_path / "own_logging.py"
    script.write_text(OWN_LOGGING)
    proxy = sipr_factory(script, extra_args=("--log-format", "json"))
    call_id = header(ask(proxy.tcp, "anyone"), "Call-ID")
    assert wait_for_log(proxy, "handled") == f"own WARNING {call_id} handled"
