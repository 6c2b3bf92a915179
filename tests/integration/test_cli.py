"""`sipr` CLI: errors are one line naming the problem, with a non-zero exit."""

import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, UdpPeer, sip_request, start_sipr, status_of


def sipr_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipr", *args], capture_output=True, text=True, timeout=timeout
    )


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("sipr: error: ")
    return lines[0]


def test_version() -> None:
    p = sipr_cli("version")
    assert p.returncode == 0
    import sipr

    assert p.stdout.strip() == f"sipr {sipr.__version__}"


def test_unknown_flag() -> None:
    p = sipr_cli("run", str(EXAMPLES / "responder.py"), "--bogus")
    assert p.returncode == 2
    assert "--bogus" in one_error_line(p)


def test_bad_listen_uri() -> None:
    p = sipr_cli("run", str(EXAMPLES / "responder.py"), "--listen", "sctp:1.2.3.4:5060")
    assert p.returncode != 0
    assert "unknown transport" in one_error_line(p)


def test_missing_app_file() -> None:
    p = sipr_cli("run", "/nonexistent/app.py")
    assert p.returncode == 1
    assert "app file not found: /nonexistent/app.py" in one_error_line(p)


def test_app_that_does_not_import(tmp_path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import sipr\napp = sipr.App(\n")
    p = sipr_cli("run", str(broken))
    assert p.returncode == 1
    line = one_error_line(p)
    assert "broken.py failed to import: SyntaxError" in line


def test_app_raising_at_import(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('no database')\n")
    p = sipr_cli("run", str(bad))
    assert "RuntimeError: no database" in one_error_line(p)


def test_module_without_app(tmp_path) -> None:
    mod = tmp_path / "noapp.py"
    mod.write_text("x = 1\n")
    p = sipr_cli("run", str(mod))
    assert "has no attribute 'app'" in one_error_line(p)


def test_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        p = sipr_cli("run", str(EXAMPLES / "responder.py"), "--listen", f"udp:127.0.0.1:{port}")
    assert p.returncode == 1
    line = one_error_line(p)
    assert f"cannot listen on UDP:127.0.0.1:{port}" in line
    assert "in use" in line


def test_bad_log_level() -> None:
    p = sipr_cli("run", str(EXAMPLES / "responder.py"), "--log-level", "chatty")
    assert "--log-level must be one of" in one_error_line(p)


def test_bad_event_loop() -> None:
    p = sipr_cli("run", str(EXAMPLES / "responder.py"), "--event-loop", "tokio")
    assert "--event-loop must be one of" in one_error_line(p)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serves_on_either_event_loop(loop: str) -> None:
    s = start_sipr(EXAMPLES / "responder.py", env={"SIPR_EVENT_LOOP": loop})
    peer = UdpPeer()
    try:
        assert f"event loop: {loop}" in s.log()
        peer.send(sip_request(port=peer.port), s.udp)
        assert status_of(peer.recv()) == 200
    finally:
        peer.close()
        assert s.stop() == 0, s.log()


def test_sigterm_and_sigint_exit_cleanly() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        s = start_sipr(EXAMPLES / "responder.py")
        s.proc.send_signal(sig)
        assert s.proc.wait(10) == 0, s.log()
