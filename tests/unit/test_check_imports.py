"""scripts/check-imports: it passes on this repository's Rust crate and
fails, naming the circle, on trees that have one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check-imports"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_this_crate_has_no_circle_and_keeps_its_layers() -> None:
    result = run("--rust")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no circles" in result.stderr


def test_a_rust_circle_between_siblings_is_named(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "rust/src/lib.rs": "pub mod sip;\n",
            "rust/src/sip/mod.rs": "mod lines;\nmod message;\npub use message::Message;\n",
            "rust/src/sip/lines.rs": "use super::message::Span;\npub fn split(_: Span) {}\n",
            "rust/src/sip/message.rs": (
                "// use super::nothing; (comments do not count)\n"
                "use super::lines::split;\npub struct Span;\npub struct Message;\n"
                'const S: &str = "crate::x::y";\n'
            ),
        },
    )
    result = run("--rust", "--root", tmp_path)
    assert result.returncode == 1
    assert "rust circle: rust/src/sip/lines.rs -> rust/src/sip/message.rs -> " in result.stdout


def test_a_parent_owns_its_children_but_layers_point_down(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "rust/src/lib.rs": "pub mod transaction;\npub mod proxy;\n",
            # mod.rs using its child's type, the child using mod.rs: one unit.
            "rust/src/transaction/mod.rs": (
                "pub mod server;\npub struct Layer { s: server::ServerTxn }\n"
            ),
            "rust/src/transaction/server.rs": (
                "use super::Layer;\npub struct ServerTxn;\n"
                "pub fn f(_: &Layer) { crate::proxy::go(); }\n"
            ),
            "rust/src/proxy/mod.rs": "use crate::transaction::Layer;\npub fn go() {}\n",
        },
    )
    result = run("--rust", "--root", tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "rust circle" not in out.replace("rust module circle", "")
    assert "rust module circle: proxy -> transaction -> proxy" in out
    assert "rust layering: transaction (layer 3) names proxy (layer 5)" in out


def test_path_attributes_and_unplaced_modules_are_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "rust/src/lib.rs": "pub mod sip;\npub mod gizmo;\n",
            "rust/src/sip/mod.rs": '#[path = "other.rs"]\nmod tests;\n',
            "rust/src/sip/other.rs": "",
            "rust/src/gizmo/mod.rs": "use crate::sip;\n",
        },
    )
    result = run("--rust", "--root", tmp_path)
    assert result.returncode == 1
    assert '#[path = "other.rs"] mod tests' in result.stdout
    assert "module 'gizmo' has no layer" in result.stdout


def test_python_circles_count_lazy_and_type_only_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "rust/src/lib.rs": "",
            "python/sipr/__init__.py": "from sipr.app import App\n",
            "python/sipr/_core.pyi": "class Core: ...\n",
            "python/sipr/app.py": "from sipr import _core\nclass App: ...\n",
            "python/sipr/server.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from sipr.stats import S\n"
            ),
            "python/sipr/stats.py": "def f():\n    from sipr import server\n",
        },
    )
    result = run("--python", "--root", tmp_path)
    assert result.returncode == 1
    assert "python circle: sipr.server -> sipr.stats -> sipr.server" in result.stdout
    # The package facade importing its modules is no circle.
    assert "sipr.app" not in result.stdout
    (tmp_path / "python/sipr/stats.py").write_text("from sipr import App\n")
    result = run("--python", "--root", tmp_path)
    assert result.returncode == 0, result.stdout
