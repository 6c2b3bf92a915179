"""`sipr ctl`: call a control method of a running sipr over its Unix socket.

ARGS are positional params, each parsed as JSON when it parses (`5`, `true`,
`{"a": 1}`), else taken as a string (`alice@example.com`). Results print as
aligned tables for people, or as JSON with `--json`.
"""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from sipr.cli_base import CliError, cli

#: How long to wait for an answer (a reload or a large ul.dump takes a while).
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 64 << 20

_ids = itertools.count(1)


class RpcFailed(CliError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def call(
    path: Path, requests: list[tuple[str, list[Any]]], timeout: float = TIMEOUT_SECONDS
) -> list[Any]:
    """Sends the calls over one connection; returns their results in order
    (raises RpcFailed for the first that failed)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise CliError(f"no sipr control socket at {path}: is sipr running?") from None
    except PermissionError:
        sock.close()
        raise CliError(f"control socket {path}: permission denied (run as sipr's user)") from None
    results: list[Any] = []
    try:
        with sock, sock.makefile("rwb") as stream:
            for method, params in requests:
                req = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
                stream.write(json.dumps(req).encode() + b"\n")
            stream.flush()
            for _ in requests:
                line = stream.readline(MAX_RESPONSE_BYTES)
                if not line:
                    raise CliError(f"sipr closed the control connection ({path})")
                response = json.loads(line)
                if "error" in response:
                    err = response["error"]
                    raise RpcFailed(err.get("code", 0), err.get("message", "unknown error"))
                results.append(response.get("result"))
    except TimeoutError:
        raise CliError(f"no answer from {path} within {timeout:.0f} s") from None
    except (ConnectionError, ValueError) as e:
        raise CliError(f"control connection {path} failed: {e}") from None
    return results


def parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _socket_path(ctl: Path | None) -> Path:
    """`--ctl`, else the control socket of the one sipr running under this
    account (in the run directory); several running must be chosen from."""
    from sipr.paths import run_dir, running_ctl_sockets

    if ctl is not None:
        return ctl
    live = running_ctl_sockets()
    if len(live) == 1:
        return live[0]
    if not live:
        raise CliError(f"no sipr control socket in {run_dir()}: is sipr running? (or --ctl PATH)")
    raise CliError(
        f"{len(live)} sipr instances are running; choose one with --ctl: "
        + ", ".join(map(str, live))
    )


def _complete_method(ctx: typer.Context, incomplete: str) -> list[str]:
    """Method names from the running sipr (nothing when none answers)."""
    try:
        (methods,) = call(_socket_path(ctx.params.get("ctl")), [("system.listMethods", [])], 2.0)
    except CliError:
        return []
    return [m for m in methods if m.startswith(incomplete)]


@cli.command(context_settings={"ignore_unknown_options": True})
def ctl(
    command: Annotated[
        str | None,
        typer.Argument(
            help="method, e.g. tm.stats (none: list them)", autocompletion=_complete_method
        ),
    ] = None,
    args: Annotated[list[str] | None, typer.Argument(help="params: JSON or strings")] = None,
    ctl: Annotated[
        Path | None,
        typer.Option(
            "--ctl", help="control socket (default: the only sipr running, in the run dir)"
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Call a control method of a running sipr (Kamailio's kamcmd)."""
    path = _socket_path(ctl)
    if command is None:
        (methods,) = call(path, [("system.listMethods", [])])
        helps = call(path, [("system.methodHelp", [m]) for m in methods])
        if json_out:
            typer.echo(json.dumps(helps, indent=2))
            return
        typer.echo(_table([{"usage": h["usage"], "description": h["help"]} for h in helps]))
        return
    params = [parse_arg(a) for a in args or []]
    try:
        (result,) = call(path, [(command, params)])
    except RpcFailed as e:
        if e.code == -32601:
            raise CliError(f"no such method: {command} ('sipr ctl' lists them)") from None
        raise
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(render(result))


def render(result: Any) -> str:
    """A result for people: scalars as-is, lists of records as tables, a
    record as `name  value` lines."""
    if isinstance(result, dict):
        nested = [k for k, v in result.items() if _is_records(v)]
        if len(nested) == 1:
            return _table(_flatten([result]))
        if all(not isinstance(v, (dict, list)) for v in result.values()):
            return _pairs(result)
        return _pairs({k: _cell(v) for k, v in result.items()})
    if isinstance(result, list):
        if not result:
            return "(none)"
        if all(isinstance(r, dict) for r in result):
            return _table(_flatten(result))
        return "\n".join(_cell(r) for r in result)
    return _cell(result)


def _is_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _flatten(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A record holding one list of records (an AoR and its contacts)
    becomes one row per inner record, the outer fields repeated."""
    out = []
    for row in rows:
        inner = [k for k, v in row.items() if _is_records(v)]
        if len(inner) != 1:
            out.append(row)
            continue
        outer = {k: v for k, v in row.items() if k != inner[0]}
        out.extend({**outer, **r} for r in row[inner[0]])
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _pairs(d: dict[str, Any]) -> str:
    width = max((len(k) for k in d), default=0)
    return "\n".join(f"{k:<{width}}  {_cell(v)}" for k, v in d.items())


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    lines = [line([c.upper() for c in columns]), *(line(row) for row in cells)]
    return "\n".join(lines)
