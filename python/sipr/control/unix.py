"""The control socket: JSON-RPC 2.0 over a Unix stream socket, one JSON
request per line in, one JSON response per line out (newline-delimited; a
connection may carry any number of requests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from pathlib import Path

from sipr.control.config import ControlError
from sipr.control.listener import Listener
from sipr.control.rpc import INVALID_REQUEST, Registry, encode

log = logging.getLogger("sipr.control")

#: Longest request line accepted; a longer one is answered with an error
#: and the connection closed.
MAX_REQUEST_BYTES = 1 << 20
#: Connections served at once; more are closed on accept.
MAX_CONNECTIONS = 16
#: A connection with no request for this long is closed (frees its slot).
IDLE_SECONDS = 60.0


class UnixListener(Listener):
    max_connections = MAX_CONNECTIONS

    def __init__(self, registry: Registry, path: Path) -> None:
        super().__init__()
        self.registry = registry
        self.path = path

    async def start(self) -> None:
        claim(self.path)
        old_umask = os.umask(0o177)  # the socket is created 0600: only our user
        try:
            self.server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        except OSError as e:
            raise ControlError(f"cannot create control socket {self.path}: {e.strerror}") from e
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.inode = os.stat(self.path).st_ino

    async def stop(self) -> None:
        if self.server is None:
            return
        await super().stop()
        # Only our own socket: a newer sipr may have replaced it.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), IDLE_SECONDS)
            except (ValueError, asyncio.LimitOverrunError):
                too_long = {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": INVALID_REQUEST,
                        "message": f"request longer than {MAX_REQUEST_BYTES} bytes",
                    },
                }
                writer.write(encode(too_long) + b"\n")
                return
            except TimeoutError:
                return
            if not line:
                return
            if not line.strip():
                continue
            response = await self.registry.handle(line)
            if response is not None:
                writer.write(encode(response) + b"\n")
                await writer.drain()


def claim(path: Path) -> None:
    """Makes `path` free for our socket: a stale socket file (no process
    behind it) is removed; a live one means another sipr is running."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = os.stat(path.parent).st_uid
    if owner != os.getuid():
        # e.g. /tmp/sipr-<uid> made by someone else to catch our socket.
        raise ControlError(f"control socket directory {path.parent} belongs to another user")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as e:
        raise ControlError(f"control socket {path} is unusable: {e.strerror}") from e
    finally:
        probe.close()
    raise ControlError(
        f"another sipr is answering on control socket {path}: stop it or choose --ctl PATH"
    )
