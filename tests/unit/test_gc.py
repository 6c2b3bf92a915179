"""sipr._gc: the collector's settings while serving (decision 0064)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sipr import _gc


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_python_defaults_become_the_serving_thresholds(collector: None) -> None:
    gc.set_threshold(*_gc.PYTHON_DEFAULTS)
    assert _gc.tune_for_serving() is True
    assert gc.get_threshold() == _gc.SERVING
    assert gc.get_freeze_count() > 0


def test_thresholds_the_application_chose_are_kept(collector: None) -> None:
    gc.set_threshold(5000, 20, 20)
    assert _gc.tune_for_serving() is False
    assert gc.get_threshold() == (5000, 20, 20)
