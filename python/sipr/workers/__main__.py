"""A worker process: `python -m sipr.workers`, started by the supervisor with
its spec in the environment; runs `sipr run` with the supervisor's parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sipr.workers import STANDBY_ENV, WORKER_ENV, WorkerSpec, current

#: `sipr run` parameters that are paths (they travel as strings in JSON).
PATH_PARAMS = ("ctl", "tls_cert", "tls_key", "tls_client_ca", "tls_ca")


def die_with_supervisor() -> None:
    """SIGTERM (a drain) when the supervisor dies, so no worker outlives it
    holding the listeners."""
    import ctypes
    import os
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # it died before prctl
        sys.exit(1)


def standby() -> None:
    """A warm standby: imports now, then waits (stdin) for the index of a
    worker that died and becomes it, keeping only that worker's sockets.
    A restart then costs no interpreter start-up (decision 0050)."""
    import os

    import sipr.auth
    import sipr.cli
    import sipr.control.commands
    import sipr.registrar
    import sipr.server  # noqa: F401  (the imports are the point)

    specs = [WorkerSpec.decode(text) for text in json.loads(os.environ.pop(STANDBY_ENV))]
    line = sys.stdin.readline()
    if not line.strip().isdigit():
        sys.exit(0)  # the supervisor stopped
    chosen = specs[int(line)]
    for spec in specs:
        if spec.index != chosen.index:
            for fd in spec.fds:
                os.close(fd)
    os.environ[WORKER_ENV] = chosen.encode()


def main() -> None:
    import os

    from sipr.cli import CliError, run

    if STANDBY_ENV in os.environ:
        die_with_supervisor()
        standby()
    spec = current()
    if spec is None:
        print("sipr: error: sipr.workers is started by `sipr run --workers N`", file=sys.stderr)
        sys.exit(2)
    die_with_supervisor()
    params = dict(spec.params)
    for name in PATH_PARAMS:
        if params.get(name) is not None:
            params[name] = Path(params[name])
    try:
        run(**params)
    except CliError as e:
        print(f"sipr: error: worker {spec.index}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
