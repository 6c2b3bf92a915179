import pytest

import sipr
from sipr import _core


def test_sip_uri_fields() -> None:
    u = sipr.URI("sip:alice:secret@[2001:db8::1]:5070;transport=tcp;lr")
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sip",
        "alice",
        "secret",
        "[2001:db8::1]",
        5070,
    )
    assert dict(u.params) == {"transport": "tcp", "lr": ""}
    assert u.param("TRANSPORT") == "tcp"
    assert str(u) == "sip:alice:secret@[2001:db8::1]:5070;transport=tcp;lr"


def test_uri_accepts_angle_brackets_and_tel() -> None:
    assert sipr.URI("<sip:bob@example.com>").host == "example.com"
    t = sipr.URI("tel:+1-201-555-0123")
    assert t.scheme == "tel"
    assert t.user == "+1-201-555-0123"


@pytest.mark.parametrize("bad", ["", "sip:", "sip:a b@c", "sip:[::1", "sip:host:70000"])
def test_bad_uri_raises_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid URI"):
        sipr.URI(bad)


def test_listen_spec_validation() -> None:
    assert _core.parse_listen("udp:127.0.0.1:5060") == ("udp", "127.0.0.1", 5060)
    assert _core.parse_listen("tcp:[::1]:5070") == ("tcp", "::1", 5070)
    with pytest.raises(ValueError, match="unknown transport"):
        _core.parse_listen("sctp:127.0.0.1:5060")
    with pytest.raises(ValueError):
        _core.parse_listen("udp:localhost")
