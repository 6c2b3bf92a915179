"""The `sipr` command: `sipr run APP`, `sipr version`.

Errors (a bad flag, an app that does not import, a port in use) print one line
naming the problem and exit non-zero.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sipr.app import App
from sipr.workers import current as workers_spec

cli = typer.Typer(
    name="sipr",
    help="sipr: an asynchronous SIP router with Python routing on a Rust core.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def load_app(spec: str) -> App:
    """Load APP given as `path/to/file.py` (attribute `app`) or `module:attr`."""
    from sipr.runtime import AppLoadError
    from sipr.runtime import load_app as load

    try:
        return load(spec)
    except AppLoadError as e:
        raise CliError(str(e)) from e


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@cli.command()
def run(
    app: Annotated[str, typer.Argument(help="path/to/app.py (attribute `app`) or module:attr")],
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            "-l",
            help=(
                "Listen URI, repeatable: udp:127.0.0.1:5060, tcp:[::1]:5060, "
                "tls:0.0.0.0:5061, ws:0.0.0.0:8080, wss:0.0.0.0:8443"
            ),
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning, error")
    ] = "info",
    log_format: Annotated[
        str, typer.Option("--log-format", help="text, or json (one object per line)")
    ] = "text",
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            help="seconds SIGTERM waits for in-flight transactions before exiting",
        ),
    ] = 10.0,
    ctl: Annotated[
        Path | None,
        typer.Option("--ctl", help="control socket path (default: <run dir>/sipr.ctl)"),
    ] = None,
    no_ctl: Annotated[bool, typer.Option("--no-ctl", help="no control socket")] = False,
    http: Annotated[
        str | None,
        typer.Option("--http", help="HTTP control listener HOST:PORT: /rpc, /metrics, status page"),
    ] = None,
    http_token: Annotated[
        str | None,
        typer.Option(
            "--http-token",
            envvar="SIPR_HTTP_TOKEN",
            help="bearer token for the HTTP listener (required off loopback)",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate chain for tls: and wss: listeners"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert")
    ] = None,
    tls_sni: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-sni",
            help="Per-domain certificate chosen by SNI, repeatable: DOMAIN=CERT.pem,KEY.pem",
        ),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option("--tls-client-ca", help="PEM CAs that client certificates must chain to"),
    ] = None,
    tls_verify_client: Annotated[
        bool,
        typer.Option(
            "--tls-verify-client", help="Refuse TLS clients without a valid certificate (mTLS)"
        ),
    ] = False,
    tls_verify_client_on: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-verify-client-on",
            help="Require client certificates on this TLS listener only, repeatable: IP:PORT",
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca", help="PEM CAs trusted for outgoing TLS (default: the system's roots)"
        ),
    ] = None,
    connection_lifetime: Annotated[
        float,
        typer.Option(
            "--tcp-connection-lifetime",
            help="Close idle TCP/TLS connections after S s (a WebSocket client is pinged first)",
        ),
    ] = 600.0,
    connect_timeout: Annotated[
        float, typer.Option("--tcp-connect-timeout", help="Fail a TCP/TLS connect after S s")
    ] = 5.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Bound on open TCP/TLS connections")
    ] = 65536,
    resolver: Annotated[
        list[str] | None,
        typer.Option(
            "--resolver",
            help="DNS server for RFC 3263 lookups, repeatable: HOST:PORT (default: resolv.conf)",
        ),
    ] = None,
    workers: Annotated[
        str,
        typer.Option("--workers", help="worker processes: N, or auto (one per core)"),
    ] = "1",
) -> None:
    """Serve APP. SIGHUP reloads APP; SIGTERM/SIGINT drains, then exits."""
    params = dict(locals())  # what `--workers` hands to each worker
    from sipr import _core
    from sipr.control import ControlError
    from sipr.server import run as serve

    if log_level.lower() not in LOG_LEVELS:
        raise CliError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    if log_format.lower() not in LOG_FORMATS:
        raise CliError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if not 0 <= drain_timeout <= 86_400:
        raise CliError(f"--drain-timeout must be 0 to 86400 seconds, got {drain_timeout:g}")
    listen = listen or ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    for spec in listen:
        try:
            _core.parse_listen(spec)
        except ValueError as e:
            raise CliError(f"--listen {spec}: {e}") from e
    control = _control_config(ctl, no_ctl, http, http_token)
    options = core_options(
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_sni=tls_sni or [],
        tls_client_ca=tls_client_ca,
        tls_verify_client=tls_verify_client,
        tls_verify_client_on=tls_verify_client_on or [],
        tls_ca=tls_ca,
    )
    if connection_lifetime <= 0 or connect_timeout <= 0 or max_connections < 1:
        raise CliError(
            "--tcp-connection-lifetime, --tcp-connect-timeout and --max-connections"
            " must be positive"
        )
    options.update(
        resolvers=[_resolver(r) for r in resolver or []],
        connection_lifetime=connection_lifetime,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
    )
    count = _workers(workers)
    if count > 1:
        status = _supervise(params, listen, count, control, log_level, log_format)
        if status:
            sys.exit(status)
        return
    worker = workers_spec()
    if worker is not None:
        listen = worker.listen
        options["listen_fds"] = worker.fds
    application = load_app(app)
    try:
        status = serve(
            application,
            listen,
            log_level=log_level.lower(),
            log_format=log_format.lower(),
            source=app,
            drain_timeout=drain_timeout,
            control=control,
            core_options=options,
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
    control: Any,
    log_level: str,
    log_format: str,
) -> int:
    """`--workers N`: the supervisor binds LISTEN once and runs N workers."""
    from sipr import _core
    from sipr.control import ControlError
    from sipr.workers.supervisor import supervise

    addrs = [_core.parse_listen(spec) for spec in listen]
    load_app(params["app"])  # a broken script is one error line here, not N
    try:
        return supervise(
            params,
            addrs,
            count,
            control,
            log_level=log_level.lower(),
            log_format=log_format.lower(),
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


def _control_config(ctl: Path | None, no_ctl: bool, http: str | None, token: str | None):  # type: ignore[no-untyped-def]
    from sipr.control import ControlConfig, ControlError, parse_http_bind
    from sipr.paths import default_ctl_socket

    if ctl is not None and no_ctl:
        raise CliError("--ctl and --no-ctl exclude each other")
    try:
        bind = parse_http_bind(http, token) if http is not None else None
    except ControlError as e:
        raise CliError(str(e)) from e
    socket_path = None if no_ctl else (ctl or default_ctl_socket())
    return ControlConfig(ctl_socket=socket_path, http=bind, http_token=token or None)


def core_options(
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_sni: list[str],
    tls_client_ca: Path | None,
    tls_verify_client: bool,
    tls_verify_client_on: list[str],
    tls_ca: Path | None,
) -> dict[str, object]:
    """Checks the TLS flags and turns them into `_core.Core` keyword arguments."""
    if (tls_cert is None) != (tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    if (tls_verify_client or tls_verify_client_on) and tls_client_ca is None:
        raise CliError("--tls-verify-client(-on) needs --tls-client-ca")
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
    sni: list[tuple[str, str, str]] = []
    for spec in tls_sni:
        domain, sep, files = spec.partition("=")
        cert, comma, key = files.partition(",")
        if not (sep and comma and domain and cert and key):
            raise CliError(f"--tls-sni {spec}: expected DOMAIN=CERT.pem,KEY.pem")
        for path in (cert, key):
            if not Path(path).is_file():
                raise CliError(f"--tls-sni {spec}: file not found: {path}")
        sni.append((domain, cert, key))
    return {
        "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None,
        "tls_sni": sni,
        "tls_client_ca": str(tls_client_ca) if tls_client_ca else None,
        "tls_verify_client": tls_verify_client,
        "tls_verify_client_on": tls_verify_client_on,
        "tls_ca": str(tls_ca) if tls_ca else None,
    }


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

    errors: tuple[type[BaseException], ...] = (ValueError, OSError, sqlite3.Error)
    try:
        import redis.exceptions

        errors += (redis.exceptions.RedisError,)
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    return errors


def _store(url: str | None):  # type: ignore[no-untyped-def]
    from sipr.paths import default_store_url
    from sipr.store import open_store

    url = url or default_store_url()
    try:
        return open_store(url)
    except _store_errors() as e:
        raise CliError(f"--store {url}: {e}") from e


def _run(coro):  # type: ignore[no-untyped-def]
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
    from sipr import __version__

    typer.echo(f"sipr {__version__}")


from sipr import cli_ctl  # noqa: E402, F401  (registers `sipr ctl` on `cli`)


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
