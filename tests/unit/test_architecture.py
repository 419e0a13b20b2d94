"""One direction of dependency: commands, then launching, then the master or the slave, then the wire.

The rules are import-linter layers contracts in pyproject.toml, one for
taskmaster and one inside the master package (the process, its core, the
core's helpers, the state beneath); this test runs them, and checks that
each names every module of its package, so a module added later cannot slip
past them.
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


def contract(container: str = "taskmaster") -> dict:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = doc["tool"]["importlinter"]["contracts"]
    [rule] = [c for c in contracts if c["type"] == "layers" and c["containers"] == [container]]
    return rule


def named(rule: dict) -> list[str]:
    return [name for layer in rule["layers"] for name in re.split(r"\s*[|:]\s*", layer)]


def test_the_contract_covers_every_library_module():
    package = REPO / "taskmaster"
    children = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in package.glob("*/__init__.py")}
    assert sorted(named(contract())) == sorted(children), "add the new module to pyproject.toml's layers contract"
    assert contract()["layers"][:2] == ["__main__", "cli"], "the commands stay on top"
    assert "master | slave" in contract()["layers"], "the master and the slave never import each other"


def test_the_layers_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_master_contract_covers_every_module_of_the_master():
    package = REPO / "taskmaster" / "master"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    rule = contract("taskmaster.master")
    assert sorted(named(rule)) == sorted(modules), "add the new module to the master's layers contract"
    assert rule["exhaustive"] is True
    assert rule["layers"][:2] == ["process", "core | metrics"], "the process runs the core; nothing imports it"
