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


def test_udp_reader_is_loop_or_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPR_UDP_READER", raising=False)
    assert sipr.App().udp_reader == "loop"
    assert sipr.App(udp_reader="thread").udp_reader == "thread"
    monkeypatch.setenv("SIPR_UDP_READER", "thread")
    assert sipr.App().udp_reader == "thread"
    assert sipr.App(udp_reader="loop").udp_reader == "loop"
    with pytest.raises(ValueError, match="'threads'"):
        sipr.App(udp_reader="threads")
