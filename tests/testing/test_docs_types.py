"""`mypy --strict` over the code of docs/tutorial.md and docs/cookbook.md
(recipes and their test blocks), as a user's project would check it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.testing.markdown_snippets import snippets, write_for_mypy


def test_tutorial_and_cookbook_pass_mypy_strict(tmp_path: Path) -> None:
    files = write_for_mypy("cookbook.md", tmp_path)
    tutorial = snippets("tutorial.md")["router"]
    (tmp_path / "router.py").write_text(tutorial.recipe)
    (tmp_path / "test_router.py").write_text(tutorial.test)
    files += [tmp_path / "router.py", tmp_path / "test_router.py"]
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"),
         "--python-version", "3.11", *map(str, files)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
