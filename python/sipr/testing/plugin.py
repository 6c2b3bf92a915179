"""The pytest plugin of `sipr.testing` (entry point `sipr`, installed by
`pip install sipr[testing]`).

Fixtures:

- `sipr_ca`: a throwaway `TestCA` for the session (TLS tests).
- `sipr_serve`: `async with sipr_serve(app) as sut:` — `sipr.testing.serve`
  with the session's CA, so TLS tests share one CA.
- `sut`: the app of the `sipr_app` fixture (which the test module defines)
  served for one test, on UDP and TCP.

Async tests run under anyio's pytest plugin (`@pytest.mark.anyio`) on the
asyncio backend: the core registers its sockets with asyncio's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from sipr.app import App
from sipr.testing.harness import SUT, serve
from sipr.testing.tls import TestCA

Serve = Callable[..., AbstractAsyncContextManager[SUT]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sipr: a test of a sipr app with sipr.testing")


@pytest.fixture(scope="session")
def sipr_ca() -> Iterator[TestCA]:
    ca = TestCA()
    yield ca
    ca.cleanup()


@pytest.fixture
def sipr_serve(sipr_ca: TestCA) -> Serve:
    def bound(app: App, **kwargs: Any) -> AbstractAsyncContextManager[SUT]:
        kwargs.setdefault("ca", sipr_ca)
        return serve(app, **kwargs)

    return bound


@pytest.fixture
def sipr_app() -> App:
    raise pytest.UsageError(
        "the `sut` fixture serves the app of a `sipr_app` fixture: define one that returns it"
    )


@pytest.fixture
async def sut(sipr_app: App, sipr_serve: Serve, anyio_backend: str) -> AsyncIterator[SUT]:
    if anyio_backend != "asyncio":
        pytest.skip("sipr runs on asyncio only")  # a trio parametrisation of the same test
    async with sipr_serve(sipr_app) as served:
        yield served
