"""`sipr.rtpengine` without a daemon: bencode, the weighted choice of an
instance per Call-ID, flag words, and address errors (the daemon itself is
in tests/integration/test_rtpengine.py)."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from sipr.bencode import decode, encode
from sipr.rtpengine import RtpEngine, _apply_flags


def test_bencode_round_trip() -> None:
    value = {"command": "offer", "flags": ["trust-address"], "n": 42, "sdp": b"v=0\r\n"}
    data = encode(value)
    assert data.startswith(b"d7:command5:offer")  # keys sorted, as bencode wants
    assert decode(data) == {
        b"command": b"offer",
        b"flags": [b"trust-address"],
        b"n": 42,
        b"sdp": b"v=0\r\n",
    }
    for bad in (b"d3:abc", b"i12", b"x", b"l"):
        with pytest.raises(ValueError):
            decode(bad)


def test_weighted_choice_is_sticky_and_follows_weights() -> None:
    rtp = RtpEngine(["udp:127.0.0.1:2001=3", "udp:127.0.0.1:2002=1", "udp:127.0.0.1:2003=0"])
    first = Counter(rtp._pick(os.urandom(8).hex())[0].spec for _ in range(4000))
    assert set(first) == {"udp:127.0.0.1:2001", "udp:127.0.0.1:2002"}  # weight 0: never first
    assert 0.68 < first["udp:127.0.0.1:2001"] / 4000 < 0.82, first
    cid = "same-call"
    assert rtp._pick(cid) == rtp._pick(cid)  # a Call-ID always starts at the same place
    # A disabled instance is skipped; the others stay in order.
    rtp.nodes[0].enabled = False
    assert [n.spec for n in rtp._pick(cid)] == ["udp:127.0.0.1:2002"]


def test_flag_words_and_bad_addresses() -> None:
    params: dict[str, object] = {}
    _apply_flags(params, "replace-origin replace-session-connection ICE=remove RTP/AVP symmetric")
    assert params == {
        "replace": ["origin", "session-connection"],
        "ICE": "remove",
        "transport-protocol": "RTP/AVP",
        "flags": ["symmetric"],
    }
    with pytest.raises(ValueError, match="unknown flag"):
        _apply_flags({}, "no-such-flag")
    for bad in ("udp:127.0.0.1", "tcp:127.0.0.1:22", "udp:host:99999"):
        with pytest.raises(ValueError, match="rtpengine"):
            RtpEngine([bad])
    with pytest.raises(ValueError):
        RtpEngine([])
