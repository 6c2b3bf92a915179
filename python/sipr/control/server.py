"""`ControlServer`: the method registry and the listeners of one running server."""

from __future__ import annotations

import time

from sipr._protocols import ServerView
from sipr.control.commands import register_builtins
from sipr.control.http import HttpListener
from sipr.control.listener import Listener
from sipr.control.rpc import Registry
from sipr.control.unix import UnixListener
from sipr.logs import announce
from sipr.paths import instance_ctl_socket
from sipr.settings import ControlSettings


class ControlServer:
    """Owns the registry and the listeners for one running `Server`."""

    def __init__(self, server: ServerView, settings: ControlSettings) -> None:
        self.server = server
        self.settings = settings
        self.started = time.monotonic()
        self.registry = Registry(lambda: server.app.rpc_methods)
        register_builtins(self.registry, server, self.started)
        self.listeners: list[Listener] = []

    async def start(self) -> None:
        settings = self.settings
        path = settings.ctl_socket
        if path is None and settings.default_socket and self.server.core is not None:
            path = instance_ctl_socket(self.server.core.local_addrs()[0])
        try:
            if path is not None:
                unix = UnixListener(self.registry, path)
                await unix.start()
                self.listeners.append(unix)
                announce(f"sipr: control socket {path}")
            if settings.http is not None:
                host, port = settings.http
                http = HttpListener(
                    self.registry, self.server, self.started, host, port, settings.http_token
                )
                await http.start()
                self.listeners.append(http)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for listener in reversed(self.listeners):
            await listener.stop()
        self.listeners.clear()
