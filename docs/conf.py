"""Sphinx configuration of Taskmaster's documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``.ci/run`` does, before the tests).  The command-line reference and the
table of every option are generated from the parsers and option tables
(``taskmaster.cli``, ``taskmaster.options``), the protocol and API pages from
the docstrings, so none of them can drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the checkout's package, also where it is not installed

import taskmaster  # noqa: E402

project = "Taskmaster"
author = "Taskmaster contributors"
copyright = "Taskmaster contributors"  # noqa: A001 - Sphinx's name for it
release = version = taskmaster.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinxarg.ext",
    "tm_options",
]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# gevent and zmq are imported by the modules documented here, and are installed with the package.
html_theme = "furo"
html_title = f"Taskmaster {release}"
