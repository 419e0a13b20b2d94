"""The library never imports the command line: taskmaster/cli/ uses the library, not the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

import taskmaster

PACKAGE = Path(taskmaster.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_taskmaster_cli():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if n.startswith("taskmaster.cli"))
        for path in PACKAGE.glob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}
