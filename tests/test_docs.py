"""The documentation: the Sphinx site in docs/ builds without a warning, and says what the commands do.

One build (a few seconds) serves every test here: it runs as .ci/run runs
it, with -W, into a temporary directory, so the checkout's docs/_build is
never touched.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskmaster import options
from taskmaster.cli import ctl, master, run, slave, spawn, status

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PARSERS = {
    "tm-master": master.build_parser,
    "tm-slave": slave.build_parser,
    "tm-spawn": spawn.build_parser,
    "tm-run": run.build_parser,
    "tm-status": status.build_parser,
    "tm-ctl": ctl.build_parser,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The docs built as text (what a reader sees, without HTML to wade through), warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "text", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert build.stderr == "", build.stderr  # -q: only warnings would be printed
    return out


@pytest.mark.slow  # .ci/run builds them too, before the tests: the quick loop leaves this to CI
@pytest.mark.timeout(300)
def test_the_docs_build_as_html_without_a_warning(tmp_path):
    """The command .ci/run runs, in a fresh output directory."""
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "reference" / "cli.html").exists()


def table_rows(text: str) -> list[list[str]]:
    """The rows of a grid table as the text builder draws it, each cell's wrapped lines joined again."""
    rows: list[list[str]] = []
    cells: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("+"):
            if cells:
                rows.append([" ".join(parts).replace("- ", "-") for parts in cells])
            cells = []
        elif line.startswith("|"):
            parts = [part.strip() for part in line.strip("|").split("|")]
            cells = cells or [[] for _ in parts]
            for cell, part in zip(cells, parts, strict=True):
                if part:
                    cell.append(part)
    return rows


@pytest.mark.timeout(300)
def test_the_option_table_has_every_option_of_every_command_with_its_variable(site):
    page = (site / "reference" / "cli.txt").read_text()
    table = page[page.index("\nEvery option\n") : page.index("\nExit codes\n")]
    shown = {row[0].strip('"'): row for row in table_rows(table)[1:]}
    for command, build_parser in PARSERS.items():
        for variable, action in options.option_settings(build_parser()):
            flag = next(flag for flag in action.option_strings if flag.startswith("--"))
            _, commands, named, default = shown[flag]
            assert command in commands.split(", "), (command, flag, commands)
            assert named.replace(" ", "") == f'"{variable}"', (flag, named)  # wrapped mid-name in a narrow cell
            assert default, flag
    assert shown["--concurrency"][3] == "10"
    assert "tm-master --new-secret PATH" in page


@pytest.mark.timeout(300)
def test_the_command_line_reference_shows_each_command_s_help(site):
    """Generated from the parsers: every option's help text is on the page, as --help prints it."""
    page = re.sub(r"\s+", " ", (site / "reference" / "cli.txt").read_text())
    for command, build_parser in PARSERS.items():
        assert command in page
        for action in build_parser()._actions:
            hidden = action.help in (None, argparse.SUPPRESS) or action.dest in ("help", "version")
            if action.option_strings and not hidden:
                shown = re.sub(r"\s+", " ", action.help % {"default": action.default, "prog": command})
                assert shown.split(" (default")[0] in page, (command, action.option_strings)


@pytest.mark.timeout(300)
def test_the_protocol_and_api_pages_come_from_the_docstrings(site):
    protocol = (site / "reference" / "protocol.txt").read_text()
    for message in ("HELLO", "REQUEST", "ACK", "HEARTBEAT", "GIVEBACK", "WELCOME", "RECALL", "CONTROL"):
        assert message in protocol, message
    api = (site / "reference" / "api.txt").read_text()
    for name in ("taskmaster.run", "RunResult", "UsageError", "Master", "Slave"):
        assert name in api, name


def test_every_page_the_readme_links_exists():
    readme = (REPO / "README.rst").read_text()
    links = re.findall(r"<(docs/[^>]+\.rst)>`_", readme)
    assert len(links) >= 15, links
    for link in links:
        assert (REPO / link).is_file(), link


def test_the_readme_is_a_landing_page_with_the_quickstart_and_the_contract():
    readme = (REPO / "README.rst").read_text()
    assert len(readme.splitlines()) <= 250
    for section in ("\nQuickstart\n", "\nYour module: the whole contract\n", "\nGuarantees\n", "\nDocumentation\n"):
        assert section in readme, section
    # .ci/run greps the test command out of the README: the two Quickstart commands, exactly.
    assert "pip install . && tm-run taskmaster/example.py 2" in readme
    assert "pip install '.[test]' && python -m pytest -n 8" in readme


def test_the_readme_is_valid_restructuredtext():
    """It is the package's long description: PyPI shows it only if it parses cleanly."""
    import docutils.core
    import docutils.writers.null

    readme = (REPO / "README.rst").read_text()
    docutils.core.publish_string(readme, writer=docutils.writers.null.Writer(), settings_overrides={"halt_level": 2})
