"""The key of the MAC in the Via branches sipr mints (docs/decisions/0021).

A response that matches no transaction is relayed only if its branch carries
our MAC. Such responses still arrive after a restart (the answer to a request
forwarded statelessly just before it), so the key outlives the process: it is
kept in a file, `$SIPR_SECRET_FILE`, else `branch.key` in the run directory
(next to the control socket; it must survive a restart, not a reboot).
Instances sharing the file (a host's instances, or hosts given the same file)
accept each other's branches.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sipr.paths import run_dir

log = logging.getLogger("sipr")

KEY_BYTES = 32


def secret_path() -> Path:
    return Path(os.environ.get("SIPR_SECRET_FILE") or run_dir() / "branch.key")


def branch_secret() -> bytes | None:
    """The persisted key, created on first use; None (a key for this run
    only, with a warning) when the file cannot be read or written safely."""
    path = secret_path()
    try:
        return _load_or_create(path)
    except (OSError, ValueError) as e:
        log.warning(
            "branch key %s unusable (%s): using a key for this run only; responses to "
            "requests forwarded before a restart will be dropped",
            path,
            e,
        )
        return None


def _load_or_create(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
        # Published whole, and only if no other instance was first.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
            raise ValueError("must belong to this user and be mode 0600")
        key = f.read(4096)
    if len(key) < 16:
        raise ValueError("shorter than 16 bytes")
    return key
