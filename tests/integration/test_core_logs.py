"""Rust core log events reach Python `logging` (issue 13, acceptance 5): a
TLS handshake failure from a bad client is a `--log-format json` record with
its level and message, and an event about a message carries its Call-ID."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT, sip_request, status_of
from tests.integration.runtime_kit import wait_for, wait_for_log
from tests.tls_peers import CertAuthority

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"


def _records(lines: list[str], text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in list(lines) if text in line]


def test_a_tls_handshake_failure_is_a_json_warning(sipr_factory, tmp_path: Path) -> None:
    files = CertAuthority(tmp_path).issue("sipr", dns=("sipr.test",), stem="sipr")
    proxy = sipr_factory(
        PROXY,
        listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"),
        extra_args=("--tls-cert", str(files.cert), "--tls-key", str(files.key),
                    "--log-format", "json"),
    )  # fmt: skip
    # A client speaking plain SIP to the TLS port: not a TLS ClientHello.
    with socket.create_connection(proxy.addrs["tls"], timeout=10) as bad:
        port = bad.getsockname()[1]
        bad.sendall(sip_request("OPTIONS", port=port))
        while bad.recv(4096):  # the core answers with an alert and closes
            pass
    wait_for_log(proxy, f"peer=127.0.0.1:{port}")
    (record,) = _records(proxy.output, f"peer=127.0.0.1:{port}")
    assert record["level"] == "warning"
    assert record["logger"] == "sipr.core.transport.stream"
    msg = str(record["msg"])
    assert msg.startswith("TLS handshake failed peer=127.0.0.1:") and " error=" in msg, msg
    assert "call_id" not in record  # not about a message
    assert proxy.alive()


def test_a_core_event_about_a_request_carries_its_call_id(sipr_factory) -> None:
    proxy = sipr_factory(
        EXAMPLES / "stateless.py",
        env={"SIPR_NEXT_HOP": "sip:127.0.0.1:9"},
        extra_args=("--log-format", "json"),
    )
    with socket.create_connection(proxy.tcp, timeout=10) as s:
        port = s.getsockname()[1]
        s.sendall(
            sip_request(
                "MESSAGE",
                via="SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}",
                port=port,
                call_id="core-log-call-id",
                max_forwards=0,
            )
        )
        answer = s.recv(65535)
    assert status_of(answer) == 483
    wait_for_log(proxy, "forward refused")
    (record,) = _records(proxy.output, "forward refused")
    assert record["call_id"] == "core-log-call-id"
    assert record["level"] == "info" and str(record["logger"]).startswith("sipr.core.")


def test_the_core_logs_at_the_level_asked_for(sipr_factory, tmp_path: Path) -> None:
    files = CertAuthority(tmp_path).issue("sipr", dns=("sipr.test",), stem="sipr")
    proxy = sipr_factory(
        PROXY,
        listen=("tcp:127.0.0.1:0", "tls:127.0.0.1:0"),
        extra_args=("--tls-cert", str(files.cert), "--tls-key", str(files.key),
                    "--log-level", "error"),
    )  # fmt: skip
    with socket.create_connection(proxy.addrs["tls"], timeout=10) as bad:
        bad.sendall(b"not TLS\r\n\r\n")
        while bad.recv(4096):
            pass
    assert proxy.stop() == 0
    assert "TLS handshake failed" not in proxy.log()


def test_core_logs_are_rate_limited_and_counted(sipr_factory, tmp_path: Path) -> None:
    """A flood of bad TLS clients: at most 100 core records a second reach
    the log, and every other one is counted in a 'suppressed' line."""
    files = CertAuthority(tmp_path).issue("sipr", dns=("sipr.test",), stem="sipr")
    proxy = sipr_factory(
        PROXY,
        listen=("tcp:127.0.0.1:0", "tls:127.0.0.1:0"),
        extra_args=("--tls-cert", str(files.cert), "--tls-key", str(files.key),
                    "--log-format", "json"),
    )  # fmt: skip
    clients = 1000
    started = time.monotonic()
    for _ in range(clients):
        with socket.create_connection(proxy.addrs["tls"], timeout=10) as bad:
            bad.sendall(b"not TLS\r\n\r\n")

    def accounted() -> tuple[int, int] | None:
        passed = len(_records(proxy.output, "TLS handshake failed"))
        suppressed = sum(
            int(str(r["msg"]).split()[0])
            for r in _records(proxy.output, "core log record(s) suppressed")
        )
        return (passed, suppressed) if passed + suppressed >= clients else None

    passed, suppressed = wait_for(accounted, 30, "every handshake failure logged or counted")
    seconds = time.monotonic() - started
    assert passed + suppressed == clients
    assert suppressed > 0
    assert passed <= 100 * (int(seconds) + 2), (passed, seconds)
    assert proxy.alive()
