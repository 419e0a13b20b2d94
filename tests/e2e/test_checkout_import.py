"""The tests exercise the working tree, also after a non-editable install.

The README's Quickstart installs with ``pip install '.[test]'``, which puts a
copy of the package in site-packages: processes the tests start must still
run the code under test, the checkout, not that copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PYTHON, REPO

import taskmaster

WHERE = "import taskmaster, sys; sys.stdout.write(taskmaster.__file__)"


def test_this_process_imports_the_checkout():
    assert Path(taskmaster.__file__).resolve().is_relative_to(REPO), taskmaster.__file__


@pytest.mark.timeout(60)
def test_a_child_process_imports_the_checkout(procs, tmp_path):
    result = procs.run([PYTHON, "-c", WHERE], cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout).resolve() == REPO / "taskmaster" / "__init__.py", result.stdout
