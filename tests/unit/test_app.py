import pytest

import sipr


def test_route_registers_async_handler() -> None:
    app = sipr.App()

    @app.route
    async def route(req: sipr.Request) -> None:
        pass

    assert app.route_handler is route


def test_sync_handler_is_refused_with_a_clear_error() -> None:
    app = sipr.App()
    with pytest.raises(TypeError, match="must be 'async def'"):

        @app.route
        def route(req):  # type: ignore[no-untyped-def]
            pass


def test_handler_arity_is_checked() -> None:
    app = sipr.App()
    with pytest.raises(TypeError, match="must take 1 argument"):

        @app.route
        async def route() -> None:
            pass
