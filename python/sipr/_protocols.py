"""What the serving machinery needs from an app and from the server, as
Protocols.

`sipr.app.App` runs on `sipr.server.Server`, which starts the control plane
(`sipr.control`), the runtime settings (`sipr.runtime`) and the life cycle
(`sipr._lifecycle`); those read the server and the app back. They name the
two through these Protocols instead of importing each other's classes, so
every import points one way (no import circles: docs/architecture.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sipr._core import Core, Request
from sipr.settings import CoreSettings, RouteSettings, TimerSettings
from sipr.workqueue import WorkQueue

if TYPE_CHECKING:
    from sipr.security import Security, SecurityRuntime

#: An `async def` route handler: called, it returns the coroutine the server drives.
Handler = Callable[[Request], Coroutine[Any, Any, None]]
Job = Callable[[], Awaitable[None]]
RpcMethod = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


class AppLike(Protocol):
    """A routing application (`sipr.App`) as the server runs it."""

    route_handler: Handler | None
    in_dialog_handler: Handler | None
    queues: dict[str, WorkQueue]
    periodic: list[tuple[float, Job]]
    startup: list[Job]
    shutdown: list[Job]
    rpc_methods: dict[str, RpcMethod]
    core_settings: CoreSettings
    timer_settings: TimerSettings
    route_settings: RouteSettings
    #: Bans, flood detection, limits, ACLs, topology hiding (docs/security.md).
    security: Security
    #: The running core and server while served.
    _core: Core | None
    _server: ServerView | None

    def on_startup(self, fn: F) -> F: ...

    def stats(self) -> dict[str, int]: ...


class Settings(Protocol):
    """Runtime settings (`sipr.runtime.RuntimeConfig`): cfg.list/get/set."""

    def list(self) -> list[dict[str, Any]]: ...

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: object) -> Any: ...


class Watched(Protocol):
    """The loop watchdog's figures (`sipr._watchdog.Watchdog`)."""

    stalls: int
    lag: float
    threshold: float


class Running(Protocol):
    """An app's started background work (`sipr._lifecycle.Services`)."""

    async def stop(self, queue_timeout: float) -> None: ...


class ServerView(Protocol):
    """A running server (`sipr.server.Server`) as the control plane, the
    runtime settings and the life cycle see it."""

    app: AppLike
    core: Core | None
    source: str | None
    loop: asyncio.AbstractEventLoop
    tasks: set[asyncio.Task[None]]
    #: The running app's background work.
    services: Running
    #: Apps replaced by reloads, still finishing (`_lifecycle._Retiring`).
    retiring: list[Any]
    reloads: int
    suspended: int
    inline: int
    deadline_expired: int
    route_deadline: float
    default_reply: tuple[int, str | None]
    stall_threshold: float
    drain_timeout: float
    drain_deadline: float | None
    aborted: asyncio.Event
    #: The security services of this server (docs/security.md).
    security: SecurityRuntime

    @property
    def watchdog(self) -> Watched | None: ...

    @property
    def config(self) -> Settings: ...

    async def reload(self) -> dict[str, object]: ...

    def timers(self) -> dict[str, float]: ...

    def set_timer(self, key: str, seconds: float) -> None: ...

    def core_setting(self, name: str) -> int: ...

    def set_core_setting(self, name: str, value: int) -> None: ...

    def set_stall_threshold(self, seconds: float) -> None: ...

    def dns_setting(self, name: str) -> float: ...

    def set_dns_setting(self, name: str, value: float) -> None: ...
