"""Finding the user's functions: ``package.module[:function]`` or ``path/file.py[:function]``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from taskmaster.errors import UsageError


def split(spec: str, default_function: str) -> tuple[str, str]:
    """('package.module' or '/abs/path/file.py', function name)."""
    if not spec:
        raise UsageError("the target is empty: give package.module or path/to/file.py")
    module, sep, function = spec.rpartition(":")
    if not sep:
        module, function = spec, default_function
    if not function.isidentifier():
        raise UsageError(f"{function!r} in target {spec!r} is not a function name: use module:function")
    if module.endswith(".py") or os.sep in module:
        module = os.path.abspath(module)
    return module, function


def identity(spec: str, default_function: str) -> str:
    """A stable name for the target, used to tie a state file to it."""
    module, function = split(spec, default_function)
    return f"{module}:{function}"


def _import_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise UsageError(f"no such file {path}: give an existing path/to/file.py or a module name")
    name = "taskmaster_user_" + hashlib.sha1(path.encode()).hexdigest()[:10]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as Python: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(path))  # its neighbours import as they would when run
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `tm-master mymodule` finds ./mymodule.py
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {name!r}: check the spelling, install it, run from its directory, "
                "or give a path/to/file.py"
            ) from None
        raise UsageError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise UsageError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None


def load(spec: str, default_function: str, rename: str | None = None) -> Callable[..., Any]:
    """Import the target and return its function; UsageError with a fix if it cannot.

    `rename` is how the user names another function, when not with
    ``module:NAME`` (tm-run: ``--handle-job-callback NAME``).
    """
    module_name, function = split(spec, default_function)
    module = _import_file(module_name) if os.path.isabs(module_name) else _import_module(module_name)
    func = getattr(module, function, None)
    if func is None:
        rename = rename or f"{spec.split(':')[0]}:NAME"
        raise UsageError(f"{module_name} has no function {function!r}: define it, or name another with {rename}")
    if not callable(func):
        raise UsageError(f"{function!r} in {module_name} is not callable")
    return func


def optional(spec: str, name: str) -> Callable[..., Any] | None:
    """Another function of the same module, if it defines one (e.g. count_jobs)."""
    module_name, _ = split(spec, name)
    module = _import_file(module_name) if os.path.isabs(module_name) else _import_module(module_name)
    func = getattr(module, name, None)
    return func if callable(func) else None


def parse_kwargs(items: list[str]) -> dict[str, str]:
    """``key=value`` arguments for get_jobs, all strings."""
    kwargs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"argument {item!r} is not key=value: pass get_jobs arguments as name=value")
        if not key.isidentifier():
            raise UsageError(f"{key!r} in {item!r} is not a valid argument name: use letters, digits and _")
        if key == "last":
            raise UsageError("'last' is reserved: taskmaster passes it when a run resumes")
        kwargs[key] = value
    return kwargs


_CHECK_FAILED = "taskmaster target check failed: "


def check_in_child(targets: list[tuple[str, str, str]]) -> None:
    """Load each (spec, default function, rename) in a child Python; UsageError (its message) if one does not load.

    For ``taskmaster.run``: importing a module runs its code and puts a
    file's directory first on sys.path, which must not happen to the
    caller's process - its sys.path and sys.modules stay as they were.
    """
    argv = [sys.executable, "-m", "taskmaster.launch.target"]
    for target in targets:
        argv += target
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode == 0:
        return
    _, marked, message = result.stderr.rpartition(_CHECK_FAILED)
    if result.returncode == 2 and marked:
        raise UsageError(message.strip())
    lines = result.stderr.strip().splitlines()
    raise UsageError(f"checking the targets failed (exit code {result.returncode}): {' / '.join(lines[-3:])}")


def _check_main(argv: list[str]) -> int:
    """``python -m taskmaster.launch.target SPEC DEFAULT RENAME ...``: load each; first problem on stderr, exit 2."""
    try:
        for spec, default_function, rename in zip(argv[::3], argv[1::3], argv[2::3], strict=True):
            load(spec, default_function, rename)
    except UsageError as exc:
        sys.stderr.write(f"{_CHECK_FAILED}{exc}\n")  # marked: the module may write to stderr too
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_check_main(sys.argv[1:]))
