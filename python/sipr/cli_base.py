"""What every `sipr` subcommand module shares: the Typer app and the error
that prints as one line (`sipr: error: …`, exit status 1)."""

from __future__ import annotations

import typer

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
