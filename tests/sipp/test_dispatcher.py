"""Issue 16, acceptance 4: the dispatcher with three SIPp UASes, OPTIONS
probing every second, hash-callid, and a reload from the store while calls
are up."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, header, sip_request, status_of
from tests.integration.ctlkit import rpc
from tests.sipp.runner import Sipp, SippStats, run_uac, start_uas

APP = ROOT / "tests" / "apps" / "dispatcher_proxy.py"


def _store(path: Path, uris: list[str]) -> None:
    from sipr.dispatcher import SCHEMA

    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)
        db.execute("DELETE FROM dispatcher")
        db.executemany(
            "INSERT INTO dispatcher (setid, destination) VALUES (1, ?)", [(u,) for u in uris]
        )


def _uas(sipp: str, port: int | None = None) -> Sipp:
    # -aa: SIPp answers the probes (OPTIONS) 200 by itself.
    return start_uas(sipp, port or free_port(), extra=("-aa",))


def _states(proxy) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    return {r["uri"]: r for r in rpc(proxy.ctl, "dispatcher.list")}


def _wait_state(proxy, uri: str, state: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until URI reaches STATE (fails the test after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _states(proxy)[uri]["state"] == state:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{uri} not {state} after {timeout}s: {_states(proxy)[uri]}")


def test_dispatcher_probing_failover_hash_and_reload(sipr_factory, sipp, tmp_path):  # type: ignore[no-untyped-def]
    uases = [_uas(sipp) for _ in range(3)]
    extra: list[Sipp] = []
    uris = [f"sip:127.0.0.1:{u.port}" for u in uases]
    db = tmp_path / "dispatcher.db"
    _store(db, uris)
    try:
        proxy = sipr_factory(APP, env={"SIPR_DS": str(db), "SIPR_PROBE": "1"})
        for uri in uris:
            start = time.monotonic()
            while _states(proxy)[uri]["probes"] < 1:
                assert time.monotonic() - start < 5, _states(proxy)
                time.sleep(0.05)
            assert _states(proxy)[uri]["state"] == "active"
        r = run_uac(sipp, proxy.udp, calls=30, rate=30, port=free_port())
        assert r.successful == 30, r.output
        assert all(s["selected"] >= 5 for s in _states(proxy).values()), _states(proxy)

        # Kill one: inactive within 3 s, and no call is offered to it after.
        dead = uris[0]
        uases[0].stop()
        took = _wait_state(proxy, dead, "inactive", 3.0)
        print(f"marked inactive {took:.2f}s after the kill")
        offered = _states(proxy)[dead]["selected"]
        r = run_uac(sipp, proxy.udp, calls=20, rate=20, port=free_port())
        assert r.successful == 20, r.output
        assert _states(proxy)[dead]["selected"] == offered

        # Restart it: active again.
        uases[0] = _uas(sipp, uases[0].port)
        took = _wait_state(proxy, dead, "active", 3.0)
        print(f"active again {took:.2f}s after the restart")

        # hash-callid keeps a Call-ID on one destination.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            port = s.getsockname()[1]
            seen = set()
            for _ in range(10):
                s.sendto(
                    sip_request("OPTIONS", "sip:which@127.0.0.1", port=port, call_id="fixed-1"),
                    proxy.udp,
                )
                resp = s.recv(65535)
                assert status_of(resp) == 200
                seen.add(header(resp, "X-Destination"))
            assert len(seen) == 1 and seen <= set(uris), seen

        # Reload from the store while calls are up: none is dropped, and new
        # calls use the new set.
        newcomer = _uas(sipp)
        extra.append(newcomer)
        new_uri = f"sip:127.0.0.1:{newcomer.port}"
        result: list[SippStats] = []
        calls = threading.Thread(
            target=lambda: result.append(
                run_uac(sipp, proxy.udp, calls=10, rate=10, port=free_port(), extra=("-d", "3000"))
            )
        )
        calls.start()
        time.sleep(1.5)  # mid-call: the first calls are up, none has ended
        _store(db, [uris[1], new_uri])
        assert rpc(proxy.ctl, "dispatcher.reload") == {"reloaded": True, "destinations": 2}
        calls.join(timeout=60)
        assert result and result[0].successful == 10 and result[0].failed == 0, result
        assert set(_states(proxy)) == {uris[1], new_uri}
        r = run_uac(sipp, proxy.udp, calls=20, rate=20, port=free_port())
        assert r.successful == 20, r.output
        assert _states(proxy)[new_uri]["selected"] >= 5

        # Operator control and metrics.
        rpc(proxy.ctl, "dispatcher.set_state", new_uri, "disabled")
        assert _states(proxy)[new_uri]["state"] == "disabled"
        stats = rpc(proxy.ctl, "stats.get", "dispatcher.")
        assert stats["dispatcher.destinations.disabled"] == 1
        assert stats["dispatcher.reloads"] == 2
    finally:
        for u in uases + extra:
            u.stop()
