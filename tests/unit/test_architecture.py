"""One direction of dependency: taskmaster.cli uses the library, never the reverse.

The rule is an import-linter contract in pyproject.toml; this test runs it,
and checks that the contract names every module of the library, so a module
added later cannot slip past it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra brings tomli on 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def contract() -> dict:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    [rule] = [c for c in doc["tool"]["importlinter"]["contracts"] if "command-line" in c["name"]]
    return rule


def test_the_contract_covers_every_library_module():
    library = {f"taskmaster.{p.stem}" for p in (REPO / "taskmaster").glob("*.py")
               if p.stem not in ("__init__", "__main__")}
    assert set(contract()["source_modules"]) == library, "add the new module to pyproject.toml's contract"
    assert contract()["forbidden_modules"] == ["taskmaster.cli", "taskmaster.__main__"]


def test_the_library_never_imports_the_cli():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
