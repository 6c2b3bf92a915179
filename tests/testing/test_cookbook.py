"""Every docs/cookbook.md recipe, served and checked by its test block."""

from __future__ import annotations

import pytest

from sipr.testing import serve
from tests.testing.markdown_snippets import load, snippets

pytestmark = pytest.mark.anyio
COOKBOOK = snippets("cookbook.md")


def test_the_cookbook_has_25_recipes() -> None:
    assert len(COOKBOOK) == 25


@pytest.mark.parametrize("name", sorted(COOKBOOK))
async def test_recipe(name: str) -> None:
    recipe, test = load("cookbook.md", COOKBOOK[name])
    async with serve(recipe.app) as sut:
        await test.check(sut, recipe)
