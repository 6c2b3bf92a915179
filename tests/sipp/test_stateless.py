"""Acceptance (issue 2, point 3): SIPp UAC -> sipr stateless forward -> SIPp
UAS, 10,000 calls at 500 cps, 0 failed, over UDP and over TCP."""

import pytest

from tests.conftest import EXAMPLES, free_port
from tests.sipp.runner import run_uac, start_uas

CALLS = 10_000
RATE = 500


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_stateless_forward_10k_calls(sipp: str, sipr_factory, transport: str) -> None:
    uas_port, uac_port = free_port(), free_port()
    mode = "u1" if transport == "udp" else "t1"
    uas = start_uas(sipp, uas_port, mode)
    try:
        hop = f"sip:127.0.0.1:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
        proxy = sipr_factory(
            EXAMPLES / "stateless.py",
            listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:0"),
            env={"SIPR_NEXT_HOP": hop},
        )
        result = run_uac(
            sipp, proxy.addrs[transport], calls=CALLS, rate=RATE, port=uac_port, transport=mode
        )
        assert result.successful == CALLS, result.output[-3000:]
        assert result.failed == 0
        assert proxy.alive()
    finally:
        uas.stop()
