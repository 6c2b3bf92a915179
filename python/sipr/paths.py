"""Default locations: the embedded store lives in the user's data directory."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_REALM = "sipr"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sipr"


def default_store_url() -> str:
    """`SIPR_STORE` if set, else SQLite in the data directory."""
    return os.environ.get("SIPR_STORE") or f"sqlite:///{data_dir() / 'sipr.db'}"


def default_realm() -> str:
    return os.environ.get("SIPR_REALM") or DEFAULT_REALM


def run_dir() -> Path:
    """Where runtime files (the control socket) live: `SIPR_RUN_DIR`, else
    `$XDG_RUNTIME_DIR/sipr`, else `/tmp/sipr-<uid>`."""
    if os.environ.get("SIPR_RUN_DIR"):
        return Path(os.environ["SIPR_RUN_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "sipr"
    return Path(f"/tmp/sipr-{os.getuid()}")


def instance_ctl_socket(listener: tuple[str, str, int]) -> Path:
    """The default control socket of an instance whose first listener is
    (transport, host, port): `<run dir>/sipr-udp-127.0.0.1-5060.ctl`."""
    transport, host, port = listener
    return run_dir() / f"sipr-{transport}-{host}-{port}.ctl"


def running_ctl_sockets() -> list[Path]:
    """Control sockets in the run directory that a live sipr answers on."""
    import socket

    live = []
    for path in sorted(run_dir().glob("sipr*.ctl")):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
            live.append(path)
        except OSError:
            pass  # a socket left by a sipr that died, or not ours to use
        finally:
            probe.close()
    return live
