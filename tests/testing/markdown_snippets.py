"""Takes the runnable snippets out of a docs page: ```python recipe=NAME
blocks (an app module) and ```python test=NAME blocks (`async def check(sut,
recipe)`), so the docs' code is what the tests run."""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"^```python (recipe|test)=(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: What every test block may use without importing it (the page says so).
TEST_PRELUDE = "from typing import Any\n\nimport sipr\nfrom sipr.testing import SUT\n"


@dataclass
class Snippet:
    name: str
    recipe: str
    test: str
    line: int


def snippets(page: str) -> dict[str, Snippet]:
    text = (DOCS / page).read_text()
    recipes: dict[str, tuple[str, int]] = {}
    tests: dict[str, str] = {}
    for m in _BLOCK.finditer(text):
        kind, name, code = m.groups()
        table = recipes if kind == "recipe" else tests
        if name in table:
            raise ValueError(f"{page}: two {kind} blocks named {name}")
        if kind == "recipe":
            recipes[name] = (code, text.count("\n", 0, m.start()) + 1)
        else:
            tests[name] = code
    if set(recipes) != set(tests):
        raise ValueError(
            f"{page}: recipes without a test or tests without a recipe: "
            f"{sorted(set(recipes) ^ set(tests))}"
        )
    return {n: Snippet(n, code, tests[n], line) for n, (code, line) in recipes.items()}


def load(page: str, snippet: Snippet) -> tuple[types.ModuleType, types.ModuleType]:
    """The recipe as a module, and the test block as one (its `check`)."""
    recipe = types.ModuleType(f"{page}:{snippet.name}")
    recipe.__file__ = f"{DOCS / page}:{snippet.line}"
    exec(compile(snippet.recipe, recipe.__file__, "exec"), recipe.__dict__)
    test = types.ModuleType(f"{page}:{snippet.name}:test")
    exec(compile(TEST_PRELUDE + snippet.test, f"{page}:test={snippet.name}", "exec"), test.__dict__)
    return recipe, test


def write_for_mypy(page: str, directory: Path) -> list[Path]:
    """Each recipe and test block as a file of its own (for mypy --strict)."""
    out = []
    for s in snippets(page).values():
        stem = f"{Path(page).stem}_{s.name}"
        (directory / f"{stem}.py").write_text(s.recipe)
        (directory / f"{stem}_test.py").write_text(TEST_PRELUDE + s.test)
        out += [directory / f"{stem}.py", directory / f"{stem}_test.py"]
    return out
