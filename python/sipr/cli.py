"""The `sipr` command: `sipr run APP`, `sipr version`.

Errors (a bad flag, an app that does not import, a port in use) print one line
naming the problem and exit non-zero.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated

import typer

from sipr.app import App

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
    attr = "app"
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise CliError(f"app file not found: {spec}")
        name = f"sipr_app_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise CliError(f"cannot load {spec}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise CliError(f"{spec} failed to import: {_describe(e)}") from e
    else:
        modname, _, attr = spec.partition(":")
        attr = attr or "app"
        try:
            module = importlib.import_module(modname)
        except Exception as e:
            raise CliError(f"{modname} failed to import: {_describe(e)}") from e
    app = getattr(module, attr, None)
    if app is None:
        raise CliError(f"{spec} has no attribute {attr!r} (expected a sipr.App)")
    if not isinstance(app, App):
        raise CliError(f"{spec}:{attr} is a {type(app).__name__}, not a sipr.App")
    if app.route_handler is None:
        raise CliError(f"{spec}: the app has no @app.route handler")
    return app


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    return f"{type(e).__name__}: {e}"


LOG_LEVELS = ("debug", "info", "warning", "error")


@cli.command()
def run(
    app: Annotated[str, typer.Argument(help="path/to/app.py (attribute `app`) or module:attr")],
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            "-l",
            help="Listen URI, repeatable: udp:127.0.0.1:5060, tcp:[::1]:5060",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning, error")
    ] = "info",
) -> None:
    """Serve APP."""
    from sipr import _core
    from sipr.server import run as serve

    if log_level.lower() not in LOG_LEVELS:
        raise CliError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    listen = listen or ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    for spec in listen:
        try:
            _core.parse_listen(spec)
        except ValueError as e:
            raise CliError(f"--listen {spec}: {e}") from e
    application = load_app(app)
    try:
        serve(application, listen, log_level=log_level)
    except OSError as e:
        raise CliError(str(e)) from e
    except KeyboardInterrupt:
        pass


@cli.command()
def version() -> None:
    """Print the sipr version."""
    from sipr import __version__

    typer.echo(f"sipr {__version__}")


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
