"""The `sipr` command: `sipr run APP`, `sipr version`.

Errors (a bad flag, an app that does not import, a port in use) print one line
naming the problem and exit non-zero.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sipr.app import App
from sipr.cli_base import CliError, cli
from sipr.settings import (
    ConnectionSettings,
    ControlSettings,
    DnsSettings,
    RunSettings,
    TlsSettings,
    default,
    meta,
)
from sipr.workers import current as workers_spec

if TYPE_CHECKING:
    from sipr.store import Store

__all__ = ["CliError", "cli", "load_app", "main"]

T = TypeVar("T")


def load_app(spec: str) -> App:
    """Load APP given as `path/to/file.py` (attribute `app`) or `module:attr`."""
    from sipr.loader import AppLoadError
    from sipr.loader import load_app as load

    try:
        return load(spec, App)
    except AppLoadError as e:
        raise CliError(str(e)) from e


def _option(settings: type[Any], name: str, *aliases: str) -> Any:
    """The `sipr run` option of a settings field: flag, help and
    environment variable from its documentation (sipr.settings)."""
    m = meta(settings, name)
    shown = m["help"] + (f": {', '.join(m['choices'])}" if m["choices"] else "")
    return typer.Option(m["flag"], *aliases, help=shown, envvar=m["env"])


@cli.command()
def run(
    app: Annotated[str, typer.Argument(help="path/to/app.py (attribute `app`) or module:attr")],
    listen: Annotated[list[str] | None, _option(RunSettings, "listen", "-l")] = None,
    log_level: Annotated[str, _option(RunSettings, "log_level")] = default(
        RunSettings, "log_level"
    ),
    log_format: Annotated[str, _option(RunSettings, "log_format")] = default(
        RunSettings, "log_format"
    ),
    drain_timeout: Annotated[float, _option(RunSettings, "drain_timeout")] = default(
        RunSettings, "drain_timeout"
    ),
    event_loop: Annotated[str, _option(RunSettings, "event_loop")] = default(
        RunSettings, "event_loop"
    ),
    ctl: Annotated[Path | None, _option(ControlSettings, "ctl_socket")] = None,
    no_ctl: Annotated[bool, typer.Option("--no-ctl", help="no control socket")] = False,
    http: Annotated[str | None, _option(ControlSettings, "http")] = None,
    http_token: Annotated[str | None, _option(ControlSettings, "http_token")] = None,
    tls_cert: Annotated[Path | None, _option(TlsSettings, "cert")] = None,
    tls_key: Annotated[Path | None, _option(TlsSettings, "key")] = None,
    tls_sni: Annotated[list[str] | None, _option(TlsSettings, "sni")] = None,
    tls_client_ca: Annotated[Path | None, _option(TlsSettings, "client_ca")] = None,
    tls_verify_client: Annotated[bool, _option(TlsSettings, "verify_client")] = False,
    tls_verify_client_on: Annotated[
        list[str] | None, _option(TlsSettings, "verify_client_on")
    ] = None,
    tls_ca: Annotated[Path | None, _option(TlsSettings, "ca")] = None,
    connection_lifetime: Annotated[
        float, _option(ConnectionSettings, "connection_lifetime")
    ] = default(ConnectionSettings, "connection_lifetime"),
    connect_timeout: Annotated[float, _option(ConnectionSettings, "connect_timeout")] = default(
        ConnectionSettings, "connect_timeout"
    ),
    connect_backoff: Annotated[float, _option(ConnectionSettings, "connect_backoff")] = default(
        ConnectionSettings, "connect_backoff"
    ),
    max_connections: Annotated[int, _option(ConnectionSettings, "max_connections")] = default(
        ConnectionSettings, "max_connections"
    ),
    resolver: Annotated[list[str] | None, _option(DnsSettings, "resolvers")] = None,
    workers: Annotated[
        str, typer.Option("--workers", help="worker processes: N, or auto (one per core)")
    ] = "1",
) -> None:
    """Serve APP. SIGHUP reloads APP; SIGTERM/SIGINT drains, then exits."""
    params = dict(locals())  # what `--workers` hands to each worker
    from sipr import _core, _loop
    from sipr.control.config import ControlError
    from sipr.server import run as serve

    worker = workers_spec()
    if worker is not None:  # the listeners the supervisor bound for this worker
        listen = worker.listen

    try:
        settings = RunSettings(
            listen=tuple(listen) if listen else default(RunSettings, "listen"),
            log_level=log_level.lower(),
            log_format=log_format.lower(),
            drain_timeout=drain_timeout,
            event_loop=event_loop.lower(),
        )
        connections = ConnectionSettings(
            connect_timeout=connect_timeout,
            connect_backoff=connect_backoff,
            connection_lifetime=connection_lifetime,
            max_connections=max_connections,
        )
        dns = DnsSettings(resolvers=tuple(_resolver(r) for r in resolver or []))
        _loop.loop_factory(settings.event_loop)  # uvloop asked for but missing: say so now
    except (ValueError, RuntimeError) as e:
        raise CliError(str(e)) from e
    for spec in settings.listen:
        try:
            _core.parse_listen(spec)
        except ValueError as e:
            raise CliError(f"--listen {spec}: {e}") from e
    control = _control_settings(ctl, no_ctl, http, http_token)
    tls = tls_settings(
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_sni=tls_sni or [],
        tls_client_ca=tls_client_ca,
        tls_verify_client=tls_verify_client,
        tls_verify_client_on=tls_verify_client_on or [],
        tls_ca=tls_ca,
    )
    count = _workers(workers)
    if count > 1:
        status = _supervise(params, list(settings.listen), count, control, settings)
        if status:
            sys.exit(status)
        return
    application = load_app(app)
    try:
        status = serve(
            application,
            settings,
            source=app,
            control=control,
            tls=tls,
            connections=connections,
            dns=dns,
        )
    except (OSError, ControlError) as e:
        raise CliError(str(e)) from e
    except KeyboardInterrupt:
        status = 1
    if status:
        sys.exit(status)


def _workers(value: str) -> int:
    from sipr.workers import WorkersError, worker_count

    try:
        return worker_count(value)
    except WorkersError as e:
        raise CliError(str(e)) from e


def _supervise(
    params: dict[str, Any],
    listen: list[str],
    count: int,
    control: ControlSettings,
    settings: RunSettings,
) -> int:
    """`--workers N`: the supervisor binds LISTEN once and runs N workers."""
    from sipr import _core
    from sipr.control.config import ControlError
    from sipr.workers.supervisor import supervise

    addrs = [_core.parse_listen(spec) for spec in listen]
    load_app(params["app"])  # a broken script is one error line here, not N
    try:
        return supervise(
            params,
            addrs,
            count,
            control,
            log_level=settings.log_level,
            log_format=settings.log_format,
            event_loop=settings.event_loop,
        )
    except (OSError, ControlError) as e:
        raise CliError(str(e)) from e


def _resolver(spec: str) -> str:
    """`--resolver HOST:PORT` checked: an IP address (port 53 when left out)."""
    host, sep, port = spec.rpartition(":")
    if not sep or (spec.count(":") > 1 and not spec.startswith("[")):
        host, port = spec, "53"
    try:
        ipaddress.ip_address(host.strip("[]"))
        valid = 0 < int(port) < 65536
    except ValueError:
        valid = False
    if not valid:
        raise CliError(f"--resolver {spec}: expected IP:PORT of a DNS server, e.g. 127.0.0.1:53")
    ip = host.strip("[]")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _control_settings(
    ctl: Path | None, no_ctl: bool, http: str | None, token: str | None
) -> ControlSettings:
    from sipr.control.config import ControlError, parse_http_bind

    if ctl is not None and no_ctl:
        raise CliError("--ctl and --no-ctl exclude each other")
    try:
        bind = parse_http_bind(http, token) if http is not None else None
    except ControlError as e:
        raise CliError(str(e)) from e
    return ControlSettings(
        ctl_socket=None if no_ctl else ctl,
        http=bind,
        http_token=token or None,
        default_socket=not no_ctl and ctl is None,
    )


def tls_settings(
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_sni: list[str],
    tls_client_ca: Path | None,
    tls_verify_client: bool,
    tls_verify_client_on: list[str],
    tls_ca: Path | None,
) -> TlsSettings:
    """Checks the TLS flags (files exist, forms parse) and makes their settings."""
    for flag, path in (
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--tls-client-ca", tls_client_ca),
        ("--tls-ca", tls_ca),
    ):
        if path is not None and not path.is_file():
            raise CliError(f"{flag}: file not found: {path}")
    for addr in tls_verify_client_on:
        host, _, port = addr.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            valid = 0 < int(port) < 65536
        except ValueError:
            valid = False
        if not valid:
            raise CliError(f"--tls-verify-client-on {addr}: expected IP:PORT of a tls: listener")
    sni: list[tuple[str, Path, Path]] = []
    for spec in tls_sni:
        domain, sep, files = spec.partition("=")
        cert_file, comma, key_file = files.partition(",")
        if not (sep and comma and domain and cert_file and key_file):
            raise CliError(f"--tls-sni {spec}: expected DOMAIN=CERT.pem,KEY.pem")
        for name in (cert_file, key_file):
            if not Path(name).is_file():
                raise CliError(f"--tls-sni {spec}: file not found: {name}")
        sni.append((domain, Path(cert_file), Path(key_file)))
    try:
        return TlsSettings(
            cert=tls_cert,
            key=tls_key,
            sni=tuple(sni),
            client_ca=tls_client_ca,
            verify_client=tls_verify_client,
            verify_client_on=tuple(tls_verify_client_on),
            ca=tls_ca,
        )
    except ValueError as e:
        raise CliError(str(e)) from e


users = typer.Typer(help="Manage digest credentials (HA1 only) in a store.", no_args_is_help=True)
cli.add_typer(users, name="user")

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="memory:, sqlite:///path.db, redis://host:port/db (default: SIPR_STORE or data dir)",
    ),
]
RealmOpt = Annotated[
    str | None, typer.Option("--realm", help="digest realm (default: SIPR_REALM or 'sipr')")
]


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a store raises when it cannot be opened or reached."""
    import sqlite3

    from sipr.store import MissingExtra

    errors: tuple[type[BaseException], ...] = (ValueError, OSError, sqlite3.Error, MissingExtra)
    try:
        import redis.exceptions

        errors += (redis.exceptions.RedisError,)
    except ImportError:  # no sipr[redis]: redis:// stores fail with MissingExtra
        pass
    return errors


def _store(url: str | None) -> Store:
    from sipr.paths import default_store_url
    from sipr.store import open_store

    url = url or default_store_url()
    try:
        return open_store(url)
    except _store_errors() as e:
        raise CliError(f"--store {url}: {e}") from e


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a store operation; a store that fails (redis down, unwritable
    database) is one error line, not a traceback."""
    import asyncio

    try:
        return asyncio.run(coro)
    except _store_errors() as e:
        raise CliError(f"store: {type(e).__name__}: {e}") from e


def _realm(realm: str | None) -> str:
    from sipr.paths import default_realm

    return realm or default_realm()


@users.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name (the AoR's user part)")],
    password: Annotated[
        str | None, typer.Option("--password", help="prompted for when omitted")
    ] = None,
    realm: RealmOpt = None,
    store: StoreOpt = None,
) -> None:
    """Add or replace a user: stores MD5 and SHA-256 HA1s, never the password."""
    from sipr.auth import ha1_all

    if not name or any(c in name for c in ":@ \t"):
        raise CliError(f"invalid user name {name!r}")
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CliError("the password must not be empty")
    st, r = _store(store), _realm(realm)

    async def go() -> None:
        try:
            await st.set_user(r, name, ha1_all(name, r, password))
        finally:
            await st.close()

    _run(go())
    typer.echo(f"user {name} saved (realm {r})")


@users.command("rm")
def user_rm(name: str, realm: RealmOpt = None, store: StoreOpt = None) -> None:
    """Remove a user."""
    st, r = _store(store), _realm(realm)

    async def go() -> bool:
        try:
            return await st.remove_user(r, name)
        finally:
            await st.close()

    if not _run(go()):
        raise CliError(f"no user {name!r} in realm {r}")
    typer.echo(f"user {name} removed (realm {r})")


@users.command("list")
def user_list(
    realm: RealmOpt = None,
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List users (realm and name)."""
    import json

    st = _store(store)

    async def go() -> list[tuple[str, str]]:
        try:
            return await st.users(realm)
        finally:
            await st.close()

    rows = _run(go())
    if json_out:
        typer.echo(json.dumps([{"realm": r, "user": u} for r, u in rows]))
        return
    if not rows:
        typer.echo("no users")
        return
    width = max(len("REALM"), *(len(r) for r, _ in rows))
    typer.echo(f"{'REALM':<{width}}  USER")
    for r, u in rows:
        typer.echo(f"{r:<{width}}  {u}")


@cli.command()
def version() -> None:
    """Print the sipr version."""
    from sipr._core import __version__

    typer.echo(f"sipr {__version__}")


# `sipr ctl` and `sipr cdr` are defined on `cli` by their own modules.
import sipr.cli_cdr  # noqa: E402
import sipr.cli_ctl  # noqa: E402, F401


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(cli)
    try:
        command.main(args=argv, prog_name="sipr", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except CliError as e:
        print(f"sipr: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        # Usage errors from the (possibly vendored) click: one line, exit 2.
        if not hasattr(e, "format_message"):
            raise
        print(f"sipr: error: {e.format_message()}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2) or 2)


if __name__ == "__main__":
    main()
