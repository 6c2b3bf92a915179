"""What the Unix-socket and HTTP listeners share: a bounded set of
connections, each served by one task, all cancelled on stop."""

from __future__ import annotations

import asyncio
import contextlib


class Listener:
    #: Connections served at once; more are refused on accept.
    max_connections = 16

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def refuse(self, writer: asyncio.StreamWriter) -> None:
        """Called instead of `handle` beyond `max_connections`."""

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self.connections) >= self.max_connections:
                await self.refuse(writer)
                return
            self.connections.add(task)
            await self.handle(reader, writer)
        except ConnectionError:
            pass
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
