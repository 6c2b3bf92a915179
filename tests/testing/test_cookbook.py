"""Every docs/cookbook.md recipe, served and checked by its test block."""

from __future__ import annotations

import pytest

from sipr.testing import serve
from tests.testing.markdown_snippets import load, snippets

pytestmark = pytest.mark.anyio
COOKBOOK = snippets("cookbook.md")


def test_the_cookbook_has_the_25_idioms_and_the_event_recipes() -> None:
    assert len(COOKBOOK) == 28


@pytest.mark.parametrize("name", sorted(COOKBOOK))
async def test_recipe(name: str) -> None:
    recipe, test = load("cookbook.md", COOKBOOK[name])
    async with serve(recipe.app) as sut:
        await test.check(sut, recipe)
