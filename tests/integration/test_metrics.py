"""Acceptance (issue 7, point 5): `/metrics` parses with prometheus_client's
parser and counts SIPp's traffic; the status page renders in headless
Chromium and shows non-zero rates while SIPp runs. Plus the HTTP listener's
token protection and bounds."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.integration.ctlkit import OPS_APP, http_request, http_rpc, register_users
from tests.sipp.peers import Sipp
from tests.sipp.regkit import wait_for

HTTP = ("--http", "127.0.0.1:0")


@pytest.mark.sipp
def test_metrics_parse_with_prometheus_client(sipp: str, sipr_factory) -> None:
    calls, users = 100, 5
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls)
    try:
        proxy = sipr_factory(
            OPS_APP, env={"SIPR_TARGET": f"sip:127.0.0.1:{uas_port}"}, extra_args=HTTP
        )
        assert proxy.http is not None
        register_users(sipp, proxy, users)
        uac = Sipp(sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=100)
        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()

        status, headers, body = http_request(proxy.http, "GET", "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    finally:
        uas.kill()

    def sample(family: str, **labels: str) -> float:
        (value,) = [s.value for s in families[family].samples if s.labels == labels]
        return value

    assert families["sipr_requests_received"].type == "counter"
    assert sample("sipr_requests_received", method="INVITE") == calls
    assert sample("sipr_requests_received", method="REGISTER") == users
    assert sample("sipr_requests_received", method="BYE") == calls
    # INVITE and BYE per call, plus the REGISTERs (server side only).
    assert sample("sipr_transactions_server_created") == 2 * calls + users
    assert sample("sipr_transactions_client_created") == 2 * calls
    assert families["sipr_transactions_server"].type == "gauge"
    assert sample("sipr_responses_received", **{"class": "2xx"}) >= 2 * calls
    assert sample("sipr_responses_sent", **{"class": "2xx"}) == 2 * calls + users
    assert sample("sipr_registered_contacts") == users
    assert sample("sipr_process_resident_memory_bytes") > 1 << 20
    for f in families.values():
        assert f.type in ("counter", "gauge"), (f.name, f.type)
        assert f.documentation, f.name
    counters = [n for n, f in families.items() if f.type == "counter"]
    assert all(f"# TYPE {n}_total counter" in body.decode() for n in counters)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: apt-get install -y chromium")
    return exe


def _page_numbers(dom: str) -> dict[str, str]:
    return dict(re.findall(r'id="([a-z-]+)"[^>]*>([^<]*)<', dom))


@pytest.mark.sipp
def test_status_page_shows_live_rates_in_chromium(sipp: str, sipr_factory, tmp_path) -> None:
    calls, rate, users = 3000, 100, 4  # 30 s of calls: the page is read long before the end
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=90)
    uac = None
    try:
        proxy = sipr_factory(
            OPS_APP, env={"SIPR_TARGET": f"sip:127.0.0.1:{uas_port}"}, extra_args=HTTP
        )
        assert proxy.http is not None
        register_users(sipp, proxy, users)
        uac = Sipp(sipp, "uac_rr.xml", free_port(), calls=calls, remote=proxy.udp, rate=rate,
                   timeout_s=90)  # fmt: skip
        wait_for(
            lambda: http_rpc(proxy.http, "stats.get", "requests_in.INVITE")["requests_in.INVITE"],
            10,
            "INVITEs from SIPp",
        )
        url = f"http://127.0.0.1:{proxy.http[1]}/"
        profile = f"--user-data-dir={tmp_path / 'profile'}"
        args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", profile,
                "--virtual-time-budget=4000"]  # fmt: skip
        dom = subprocess.run(
            [*args, "--dump-dom", url], capture_output=True, text=True, timeout=60
        ).stdout
        shot = tmp_path / "status.png"
        subprocess.run(
            [*args, "--window-size=1200,900", f"--screenshot={shot}", url],
            capture_output=True, timeout=60,
        )  # fmt: skip
        still_running = uac.proc.poll() is None
    finally:
        if uac is not None:
            uac.kill()
        uas.kill()
    assert still_running, "SIPp finished before the page was read: raise `calls`"
    numbers = _page_numbers(dom)
    assert numbers.get("state") == "live", dom[-3000:]
    assert float(numbers["rate-requests"]) > 0, numbers
    assert float(numbers["rate-transactions"]) > 0, numbers
    assert int(numbers["total-requests"]) > 0, numbers
    assert int(numbers["registrations-bindings"]) == users, numbers
    assert shot.stat().st_size > 10_000  # a rendered page, not an error stub
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_http_token_protects_rpc_and_metrics(sipr_factory) -> None:
    token = "s3cret-token"
    proxy = sipr_factory(OPS_APP, extra_args=(*HTTP, "--http-token", token))
    assert proxy.http is not None
    for method, path in (("GET", "/metrics"), ("POST", "/rpc"), ("GET", "/stats.json")):
        body = b'{"jsonrpc":"2.0","id":1,"method":"core.version"}' if method == "POST" else None
        assert http_request(proxy.http, method, path, body)[0] == 401
        assert http_request(proxy.http, method, path, body, token="wrong")[0] == 401
        assert http_request(proxy.http, method, path, body, token=token)[0] == 200
    assert http_rpc(proxy.http, "app.add", 2, 2, token=token) == 4
    # The page is static (no data); what it fetches needs the token.
    status, _, page = http_request(proxy.http, "GET", "/")
    assert status == 200 and b'id="rate-requests"' in page


def test_http_refuses_non_loopback_without_token() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sipr", "run", str(OPS_APP), "--listen", "udp:127.0.0.1:0",
         "--http", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "sipr: error: --http 0.0.0.0:0 is not a loopback address: "
        "set --http-token (or SIPR_HTTP_TOKEN)"
    ]


def test_http_bounds_and_errors(sipr_factory) -> None:
    proxy = sipr_factory(OPS_APP, extra_args=HTTP)
    assert proxy.http is not None
    assert http_request(proxy.http, "GET", "/nope")[0] == 404
    assert http_request(proxy.http, "GET", "/rpc")[0] == 405
    with socket.create_connection(proxy.http, timeout=10) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: sipr\r\nContent-Length: 99999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    with socket.create_connection(proxy.http, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20_000 + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    # HTTP/1.1 framing is h11's (decision 0026): a request without Host, a
    # malformed header line, a chunked body.
    with socket.create_connection(proxy.http, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(proxy.http, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: sipr\r\nno colon here\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    rpc = b'{"jsonrpc":"2.0","id":7,"method":"app.add","params":[2,3]}'
    with socket.create_connection(proxy.http, timeout=10) as s:
        s.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: sipr\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(rpc), rpc)
        )
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"result":5' in answer, answer
    assert http_rpc(proxy.http, "app.add", 1, 2) == 3  # still serving


def test_http_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "sipr", "run", str(OPS_APP), "--listen", "udp:127.0.0.1:0",
             "--no-ctl", "--http", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"sipr: error: --http 127.0.0.1:{port}: Address already in use"
    ]
