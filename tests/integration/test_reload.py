"""Route-script reload (issue 7, acceptance 3): SIGHUP imports the script
again; new requests use the new code, handlers already running finish on
the old one, and a script that fails to import is refused with its error
while the running one stays."""

from __future__ import annotations

import re
import signal
import threading

from tests.conftest import free_port, header, status_of
from tests.integration.ctlkit import sipr_ctl
from tests.integration.runtime_kit import (
    ask,
    copy_app,
    set_version,
    version,
    wait_for,
    wait_for_log,
)
from tests.sipp.peers import sipr_stats
from tests.sipp.runner import Sipp


def test_reload_during_300_cps_loses_no_call_and_refuses_a_broken_script(
    sipp: str, sipr_factory, tmp_path
) -> None:
    calls, rate = 3000, 300
    script = copy_app(tmp_path, "1")
    uas_port, uac_port = free_port(), free_port()
    # The callee answers 200 ms after ringing: ~60 calls wait on it at any time,
    # their handlers suspended in relay() when the reload comes.
    uas = Sipp(sipp, "uas_rr_delayed.xml", uas_port, calls=calls, timeout_s=90)
    try:
        proxy = sipr_factory(script, env={"SIPR_TARGET": f"sip:127.0.0.1:{uas_port}"})
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=rate, timeout_s=90
        )

        def invites() -> int:
            return sipr_stats(proxy.tcp).get("requests_in.invite", 0)

        wait_for(lambda: invites() >= 600, timeout=30, what="calls before the reload")
        set_version(script, "2")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: version(proxy.tcp) == "2", timeout=10, what="the new code")
        at_reload = invites()
        assert at_reload < calls, "the reload came after the traffic: make the run longer"
        wait_for_log(proxy, "reloaded ")

        # The new module counts the INVITEs its route handler relays.
        wait_for(
            lambda: sipr_stats(proxy.tcp).get("app.invite", 0) >= 300,
            timeout=30,
            what="calls routed by the reloaded code",
        )

        set_version(script, "3", extra="\ndef broken(:\n")
        proxy.proc.send_signal(signal.SIGHUP)
        refused = wait_for_log(proxy, "reload refused")
        assert "SyntaxError" in refused and str(script) in refused, refused
        assert version(proxy.tcp) == "2"

        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()
        new_code = sipr_stats(proxy.tcp)["app.invite"]
        assert 300 <= new_code <= calls - 600, new_code
        assert proxy.alive()
        reloaded = wait_for_log(proxy, "reloaded ")
        on_old = re.search(r"(\d+) running handler\(s\) finish on the old", reloaded)
        assert on_old and int(on_old.group(1)) > 0, reloaded
        print(f"\nreload after {at_reload} INVITEs; new code routed {new_code}; {reloaded}")
    finally:
        uas.kill()


def test_a_running_handler_finishes_on_the_old_code(sipr_factory, tmp_path) -> None:
    script = copy_app(tmp_path, "old")
    proxy = sipr_factory(script)
    held: list[bytes] = []
    holder = threading.Thread(target=lambda: held.append(ask(proxy.tcp, "hold", "X-Hold: 2\r\n")))
    holder.start()
    try:
        wait_for(
            lambda: sipr_stats(proxy.tcp).get("handlers.suspended", 0) >= 1,
            timeout=10,
            what="the held request",
        )
        set_version(script, "new")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: version(proxy.tcp) == "new", timeout=10, what="the new code")
    finally:
        holder.join(10)
    assert status_of(held[0]) == 200 and header(held[0], "X-Version") == "old"
    # The held request's handler, and maybe a poll's not yet finished.
    on_old = re.search(r"(\d+) running handler\(s\) finish on the old", proxy.log())
    assert on_old and int(on_old.group(1)) >= 1, proxy.log()


def test_reload_refuses_a_script_without_app_or_route(sipr_factory, tmp_path) -> None:
    script = copy_app(tmp_path, "1")
    proxy = sipr_factory(script)
    for broken, error in (
        ("app = None\n", "has no attribute 'app'"),
        ("app = 42\n", "is a int, not a sipr.App"),
        ("import sipr\napp = sipr.App()\n", "the app has no @app.route handler"),
        ("raise RuntimeError('no database')\n", "RuntimeError: no database"),
    ):
        before = proxy.log().count("reload refused")
        script.write_text(broken)
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda b=before: proxy.log().count("reload refused") > b, what="a refusal")
        refusal = [line for line in proxy.log().splitlines() if "reload refused" in line][-1]
        assert error in refusal, refusal
        assert version(proxy.tcp) == "1"


def test_ctl_app_reload_answers_with_the_result(sipr_factory, tmp_path) -> None:
    script = copy_app(tmp_path, "1")
    proxy = sipr_factory(script)
    assert sipr_ctl("--ctl", str(proxy.ctl), "--json", "proxy.version").stdout.strip() == '"1"'
    set_version(script, "2", extra="\nimport no_such_module_here\n")
    refused = sipr_ctl("--ctl", str(proxy.ctl), "app.reload")
    assert refused.returncode != 0
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in refused.stderr
    assert version(proxy.tcp) == "1"
    set_version(script, "2")
    done = sipr_ctl("--ctl", str(proxy.ctl), "--json", "app.reload")
    assert done.returncode == 0, done.stderr
    assert '"reloads": 1' in done.stdout
    assert version(proxy.tcp) == "2"
    # The app's own control methods come from the new script too.
    answer = sipr_ctl("--ctl", str(proxy.ctl), "--json", "proxy.version")
    assert answer.returncode == 0 and answer.stdout.strip() == '"2"', answer


SERVICES_SCRIPT = """
import logging

import sipr

VERSION = "{version}"
app = sipr.App()
log = logging.getLogger("services")
jobs = app.queue("jobs")


@app.on_startup
async def up() -> None:
    log.warning("startup %s", VERSION)


@app.on_shutdown
async def down() -> None:
    log.warning("shutdown %s", VERSION)


@jobs.consumer
async def consume(item: str) -> None:
    log.warning("job %s done by %s", item, VERSION)


@app.route
async def route(req: sipr.Request) -> None:
    jobs.put_nowait(req.uri.user)
    req.reply(200, headers={{"X-Version": VERSION}})
"""


def test_reload_starts_the_new_services_and_retires_the_old(sipr_factory, tmp_path) -> None:
    """The new script's on_startup runs and its queue serves new requests; the
    old app's on_shutdown runs once nothing runs on it any more."""
    script = tmp_path / "services.py"
    script.write_text(SERVICES_SCRIPT.format(version="1"))
    proxy = sipr_factory(script)
    assert header(ask(proxy.tcp, "first"), "X-Version") == "1"
    wait_for_log(proxy, "job first done by 1")
    script.write_text(SERVICES_SCRIPT.format(version="2"))
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for_log(proxy, "shutdown 1")
    assert header(ask(proxy.tcp, "second"), "X-Version") == "2"
    wait_for_log(proxy, "job second done by 2")
    lines = proxy.log().splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert at("startup 1") < at("startup 2") < at("shutdown 1")
    assert proxy.stop() == 0
    assert "shutdown 2" in proxy.log()


def test_reload_of_a_module_attr_app(sipr_factory, tmp_path) -> None:
    """`sipr run module:attr`: the module is executed again, not taken from
    the import cache."""
    (tmp_path / "reloadable_route.py").write_text(SERVICES_SCRIPT.format(version="a"))
    proxy = sipr_factory("reloadable_route:app", env={"PYTHONPATH": str(tmp_path)})
    assert header(ask(proxy.tcp, "x"), "X-Version") == "a"
    (tmp_path / "reloadable_route.py").write_text(SERVICES_SCRIPT.format(version="b"))
    proxy.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: header(ask(proxy.tcp, "y"), "X-Version") == "b", what="the new module")
