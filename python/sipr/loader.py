"""Loading the route script, for `sipr run` and route-script reload.

`load_app` imports the script given to `sipr run`; with `fresh=True` it
executes it again as a new module, so a reload gets new code even when the
module was imported before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


class AppLoadError(Exception):
    """The app could not be loaded: the message names the script and the problem."""


class ReloadError(AppLoadError):
    """A reload was refused; the running app stays in place."""


# --- loading the app ---------------------------------------------------------


def load_app(spec: str, kind: type[T], *, fresh: bool = False) -> T:
    """Load APP given as `path/to/file.py` (attribute `app`) or `module:attr`:
    an instance of `kind` (`sipr.App`; a reload asks for the running app's class).

    `fresh` executes the source again in a new module object, even if it was
    imported before (a reload); the module it replaces in `sys.modules` is
    put back if the new one fails."""
    attr = "app"
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise AppLoadError(f"app file not found: {spec}")
        name = f"sipr_app_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise AppLoadError(f"cannot load {spec}")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module = _execute(name, mod_spec, spec)
    else:
        modname, _, attr = spec.partition(":")
        attr = attr or "app"
        if fresh:
            try:
                mod_spec = importlib.util.find_spec(modname)
            except Exception as e:
                raise AppLoadError(f"{modname} failed to import: {describe(e)}") from e
            if mod_spec is None or mod_spec.loader is None:
                raise AppLoadError(f"{modname} failed to import: no such module")
            module = _execute(modname, mod_spec, modname)
        else:
            try:
                module = importlib.import_module(modname)
            except Exception as e:
                raise AppLoadError(f"{modname} failed to import: {describe(e)}") from e
    app = getattr(module, attr, None)
    if app is None:
        raise AppLoadError(f"{spec} has no attribute {attr!r} (expected a sipr.App)")
    if not isinstance(app, kind):
        raise AppLoadError(f"{spec}:{attr} is a {type(app).__name__}, not a sipr.App")
    if getattr(app, "route_handler", None) is None:
        raise AppLoadError(f"{spec}: the app has no @app.route handler")
    return app


def _execute(name: str, mod_spec: ModuleSpec, shown: str) -> ModuleType:
    """Runs a module's source in a new module object registered as `name`.

    The source is compiled from the file itself, never from a cached .pyc:
    a script edited twice within the same second (same size) must not come
    back as its old bytecode."""
    module = importlib.util.module_from_spec(mod_spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        origin = mod_spec.origin
        if origin and origin.endswith(".py"):
            code = compile(Path(origin).read_bytes(), origin, "exec")
            exec(code, module.__dict__)
        elif mod_spec.loader is not None:
            mod_spec.loader.exec_module(module)
    except BaseException as e:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        if isinstance(e, Exception):
            raise AppLoadError(f"{shown} failed to import: {describe(e)}") from e
        raise
    return module


def describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    return f"{type(e).__name__}: {e}"
