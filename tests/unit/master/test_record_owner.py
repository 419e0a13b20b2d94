"""Only the registry changes a slave's record (issue 24, "one owner for each piece of state").

Every module of taskmaster/master/ is parsed; an assignment (plain,
augmented, annotated, or in a tuple), or a ``del``, whose target is a field
of ``SlaveRecord`` on anything but ``self`` - ``slave.told_quit = True``,
``slave.finished += n``, ``slave.batches[i] = b`` - is a write to a record,
and is allowed in registry.py alone.  Other modules read records and tell
the registry what happened.  The master's other classes keep their own
attributes (on ``self``), whatever their names; and a module that names
neither the registry nor ``SlaveRecord`` has no way to a record (the
checkpoint's ``state.finished`` is the run's count, not a slave's), so only
the modules that do are checked.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import taskmaster.master
from taskmaster.master.registry import SlaveRecord

MASTER = Path(taskmaster.master.__file__).parent
FIELDS = {f.name for f in dataclasses.fields(SlaveRecord)}


def targets(node: ast.AST) -> list[ast.expr]:
    """What `node` assigns to or deletes, tuples and starred targets unpacked."""
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    elif isinstance(node, ast.Delete):
        found = list(node.targets)
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        found = [node.target]
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        found = [node.optional_vars]
    elif isinstance(node, ast.NamedExpr):
        found = [node.target]
    else:
        return []
    flat: list[ast.expr] = []
    while found:
        target = found.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            found.extend(target.elts)
        elif isinstance(target, ast.Starred):
            found.append(target.value)
        else:
            flat.append(target)
    return flat


def record_field(target: ast.expr) -> str | None:
    """The record field `target` writes (``x.f`` or ``x.f[k]``, x not ``self``), else None."""
    while isinstance(target, ast.Subscript):
        target = target.value
    if not isinstance(target, ast.Attribute) or target.attr not in FIELDS:
        return None
    if isinstance(target.value, ast.Name) and target.value.id == "self":
        return None
    return target.attr


def reaches_records(tree: ast.AST) -> bool:
    """Does the module name the registry or SlaveRecord: the ways to get hold of a record?"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in ("registry", "SlaveRecord"):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "registry":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "taskmaster.master.registry":
            return True
    return False


def writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    if not reaches_records(tree):
        return []
    found = []
    for node in ast.walk(tree):
        for target in targets(node):
            name = record_field(target)
            if name is not None:
                found.append(f"{path.name}:{target.lineno}: {ast.unparse(target)}")
    return found


def test_the_check_sees_a_write_to_a_record(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from taskmaster.master.registry import SlaveRecord\n"
        "slave.told_quit = True\n"
        "slave.finished += 3\n"
        "a, slave.last_batch = 1, 2\n"
        "del slave.batches[4]\n"
        "self.finished = 0\n"  # a class's own attribute: not a record
        "slave.other = 1\n"  # not a field of a record
    )
    assert [line.split(": ", 1)[1] for line in writes(sample)] == [
        "slave.told_quit",
        "slave.finished",
        "slave.last_batch",
        "slave.batches[4]",
    ]


def test_a_module_without_a_way_to_a_record_is_not_checked(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("state = load()\nstate.finished += 1\n")
    assert writes(sample) == []


def test_only_the_registry_writes_a_slave_record():
    modules = sorted(p for p in MASTER.glob("*.py") if p.name != "registry.py")
    checked = [p.name for p in modules if reaches_records(ast.parse(p.read_text()))]
    # The check looks where the master's modules are, and at those that handle records.
    assert {"core.py", "dispatch.py", "control.py", "admission.py", "reports.py", "status.py"} <= set(checked)
    found = [line for path in modules for line in writes(path)]
    assert found == [], "records written outside registry.py:\n" + "\n".join(found)
