"""docs/tutorial.md as a user does it: router.py and test_router.py from
the page in a directory of their own, run with `pytest` (a subprocess: the
test is that a user's project finds the `sipr.testing` plugin by its entry
point, with none of this repository's conftest), needing nothing that
`pip install 'sipr[testing]'` does not bring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.testing.markdown_snippets import snippets


def closure(root: str, extras: set[str]) -> set[str]:
    """The distributions `pip install 'root[extras]'` installs, by name."""
    seen: set[str] = set()
    todo: deque[tuple[str, set[str]]] = deque([(root, extras)])
    while todo:
        name, wanted = todo.popleft()
        key = canonicalize_name(name)
        if key in seen and not wanted:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency of a dependency, not installed
        for line in requires:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                if canonicalize_name(req.name) not in seen or req.extras:
                    todo.append((req.name, set(req.extras)))
    return seen


#: Runs pytest with the named top-level modules unimportable, as if their
#: distributions were not installed.
PYTEST_WITHOUT = """
import sys

blocked = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
import pytest

sys.exit(pytest.main(sys.argv[2:]))
"""


def test_tutorial_project_passes_with_pytest_and_only_sipr_testing(tmp_path: Path) -> None:
    tutorial = snippets("tutorial.md")["router"]
    (tmp_path / "router.py").write_text(tutorial.recipe)
    (tmp_path / "test_router.py").write_text(tutorial.test)
    allowed = closure("sipr", {"testing"})
    assert {"pytest", "cryptography", "anyio", "sipr"} <= allowed
    # What this environment has beyond `sipr[testing]` is made unimportable
    # and its pytest plugins stay off: the run is a user's fresh install.
    others = [d for d in metadata.distributions() if canonicalize_name(d.name) not in allowed]
    assert others, "expected the test environment to hold more than sipr[testing]"
    hidden = {
        module
        for module, owners in metadata.packages_distributions().items()
        if module not in sys.stdlib_module_names
        and not any(canonicalize_name(d) in allowed for d in owners)
    }
    assert "mypy" in hidden  # of sipr[test], not sipr[testing]
    plugins_off = [a for d in others for ep in d.entry_points.select(group="pytest11")
                   for a in ("-p", f"no:{ep.name}")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    done = subprocess.run(
        [sys.executable, "-c", PYTEST_WITHOUT, ",".join(sorted(hidden)),
         "-q", "-p", "no:cacheprovider", *plugins_off, "test_router.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout
