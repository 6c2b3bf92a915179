"""docs/tutorial.md as a user does it: router.py and test_router.py from
the page in a directory of their own, run with `pytest` (a subprocess: the
test is that a user's project finds the `sipr.testing` plugin by its entry
point, with none of this repository's conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.testing.markdown_snippets import snippets


def test_tutorial_project_passes_with_pytest(tmp_path: Path) -> None:
    tutorial = snippets("tutorial.md")["router"]
    (tmp_path / "router.py").write_text(tutorial.recipe)
    (tmp_path / "test_router.py").write_text(tutorial.test)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_router.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout
