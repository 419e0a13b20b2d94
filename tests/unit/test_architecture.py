"""One direction of dependency: commands, then launching, then the master or the slave, then the wire.

The rule is an import-linter layers contract in pyproject.toml; this test
runs it, and checks that the contract names every module and package of
taskmaster, so a module added later cannot slip past it.
"""

from __future__ import annotations

import re
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
    [rule] = [c for c in doc["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return rule


def test_the_contract_covers_every_library_module():
    package = REPO / "taskmaster"
    children = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in package.glob("*/__init__.py")}
    named = [name for layer in contract()["layers"] for name in re.split(r"\s*[|:]\s*", layer)]
    assert sorted(named) == sorted(children), "add the new module to pyproject.toml's layers contract"
    assert contract()["containers"] == ["taskmaster"]
    assert contract()["layers"][:2] == ["__main__", "cli"], "the commands stay on top"
    assert "master | slave" in contract()["layers"], "the master and the slave never import each other"


def test_the_layers_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
