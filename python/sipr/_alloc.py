"""Defaults for the core's allocator (mimalloc, docs/decisions/0063), set
before `sipr._core` loads: mimalloc reads its options from the environment
once, when the library starts. An operator's own `MIMALLOC_*` values win."""

from __future__ import annotations

import os

# Commit an arena's memory as it is used, not all at once: ~15 MB less RSS at
# start and ~250 B less per suspended transaction in
# tests/sipp/test_async_routing.py::test_5k_suspended_invites_memory.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")
