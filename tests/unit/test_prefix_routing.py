"""Prefix routing rules: longest prefix, caller prefix, time windows,
priorities and weights (sipr.PrefixRouter, no network)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from sipr.prefix_routing import Gateway, PrefixRouter, PrefixRoutingError, Rule, Window

MONDAY_NOON = datetime(2026, 1, 5, 12, 0)
SUNDAY_NIGHT = datetime(2026, 1, 4, 23, 30)


def router(rules: list[Rule]) -> PrefixRouter:
    gws = [Gateway(g, f"sip:127.0.0.1:{5060 + i}") for i, g in enumerate(("a", "b", "c"))]
    return PrefixRouter(gateways=gws, rules=rules)


def test_longest_prefix_and_caller_prefix_win() -> None:
    r = router([Rule("4", "a"), Rule("44", "b"), Rule("44", "c", caller_prefix="9"), Rule("", "a")])
    assert [g.id for g in r.gateways_for("4420", "100")] == ["b"]
    assert [g.id for g in r.gateways_for("4420", "9100")] == ["c"]
    assert [g.id for g in r.gateways_for("4120", "")] == ["a"]
    assert [g.id for g in r.gateways_for("777", "")] == ["a"]  # the default route ""


def test_time_windows() -> None:
    r = router(
        [Rule("1", "a", window=Window.parse("mon-fri 08:00-18:00")), Rule("1", "b", priority=1)]
    )
    assert [g.id for g in r.gateways_for("123", when=MONDAY_NOON)] == ["a", "b"]
    assert [g.id for g in r.gateways_for("123", when=SUNDAY_NIGHT)] == ["b"]
    night = Window.parse("22:00-06:00")
    assert night is not None and night.contains(SUNDAY_NIGHT) and not night.contains(MONDAY_NOON)
    assert Window.parse("sat,sun").contains(SUNDAY_NIGHT)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="day"):
        Window.parse("funday")
    with pytest.raises(ValueError, match="HH:MM"):
        Window.parse("mon 25:00-26:00")


def test_priority_then_weight() -> None:
    r = router([Rule("5", "a", priority=2), Rule("5", "b", weight=1), Rule("5", "c", weight=3)])
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        order = [g.id for g in r.gateways_for("555")]
        assert order[-1] == "a" and sorted(order) == ["a", "b", "c"]
        firsts[order[0]] += 1
    assert 0.70 < firsts["c"] / 4000 < 0.80


def test_bad_rows_are_refused() -> None:
    with pytest.raises(PrefixRoutingError, match="no gateway 'zz'"):
        router([Rule("1", "zz")])
    with pytest.raises(PrefixRoutingError, match="not a sip"):
        PrefixRouter(gateways=[Gateway("x", "http://a")], rules=[])
