"""Optional dependencies (issue 13, acceptance 6): the redis client is the
`sipr[redis]` extra. Without it, a `redis://` store is one error line naming
the extra; the rest of sipr works."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

# Makes `import redis` fail in the child, as on an install without the extra.
NO_REDIS = """
import sys


class _NoRedis:
    def find_spec(self, name, path=None, target=None):
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoRedis())
"""


@pytest.fixture
def no_redis_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(NO_REDIS)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    run_dir = tmp_path / "run"
    return {**os.environ, "PYTHONPATH": path, "SIPR_RUN_DIR": str(run_dir)}


def _sipr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipr", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_the_redis_client_is_only_an_extra() -> None:
    requires = importlib.metadata.requires("sipr") or []
    redis = [r for r in requires if r.split(";")[0].strip().startswith("redis")]
    assert redis, requires
    assert all("extra ==" in r for r in redis), redis
    assert any(r.split(";")[1].replace('"', "'").strip() == "extra == 'redis'" for r in redis)


def test_redis_store_without_the_extra_is_one_line_naming_it(no_redis_env: dict[str, str]) -> None:
    probe = _sipr(no_redis_env, "version")
    assert probe.returncode == 0, probe.stderr  # sipr itself needs no redis
    env = {**no_redis_env, "SIPR_STORE": "redis://127.0.0.1:6399/0"}
    out = _sipr(env, "run", str(EXAMPLES / "pbx.py"), "--listen", "udp:127.0.0.1:0", "--no-ctl")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("sipr: error: ") and "pip install 'sipr[redis]'" in lines[0]

    users = _sipr(no_redis_env, "user", "list", "--store", "redis://127.0.0.1:6399/0")
    assert users.returncode == 1
    assert users.stderr.strip().splitlines() == [
        "sipr: error: --store redis://127.0.0.1:6399/0: "
        "redis:// stores need the redis client: pip install 'sipr[redis]'"
    ]


def test_other_stores_work_without_the_extra(no_redis_env: dict[str, str], tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'users.db'}"
    added = _sipr(no_redis_env, "user", "add", "alice", "--password", "pw", "--store", store)
    assert added.returncode == 0, added.stderr
    listed = _sipr(no_redis_env, "user", "list", "--store", store, "--json")
    assert '"user": "alice"' in listed.stdout
