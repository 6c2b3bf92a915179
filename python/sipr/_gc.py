"""The garbage collector's settings while serving (docs/decisions/0064).

A proxy makes and drops container objects at a steady rate (a task, a
coroutine and a request per handled request) and keeps a large, stable set
from startup (the app, its modules, sipr's own). Python's defaults suit the
opposite: a collection of the youngest generation every 700 net allocations
and full collections that walk every object loaded at startup.
"""

from __future__ import annotations

import gc

PYTHON_DEFAULTS = (700, 10, 10)
#: A young collection every 10,000 net container allocations: what it walks is
#: the requests in flight, so fewer collections do the same work fewer times.
SERVING = (10_000, 10, 10)


def tune_for_serving() -> bool:
    """Moves what startup made out of the collector's sight (`gc.freeze`) and,
    unless the application chose its own thresholds, sets `SERVING`. Returns
    whether the thresholds were changed."""
    gc.freeze()
    if gc.get_threshold() != PYTHON_DEFAULTS:
        return False
    gc.set_threshold(*SERVING)
    return True
