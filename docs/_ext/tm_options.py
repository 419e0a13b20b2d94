"""The ``tm-options`` directive: one table of every option of every command.

Each row is an option, the commands that take it, the TASKMASTER_<OPTION>
variable that also sets it and its default - all read from the commands'
parsers, which are built from the option tables of ``taskmaster.options``,
and named the way ``taskmaster.options.environment_variable`` names them.
So the table cannot drift from the commands.
"""

from __future__ import annotations

import argparse
import importlib
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from taskmaster import options

COMMANDS = ["master", "slave", "spawn", "run", "status", "ctl"]
_DEFAULT_IN_HELP = re.compile(r"\(default: (.*)\)\s*$")


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(command, parser) for every command, from its module's build_parser."""
    found = []
    for name in COMMANDS:
        module = importlib.import_module(f"taskmaster.cli.{name}")
        found.append((f"tm-{name}", module.build_parser()))
    return found


def _rst_text(text: str) -> str:
    """Plain help text as reStructuredText that reads the same: markup characters escaped."""
    return re.sub(r"([*`|\\])", r"\\\1", text)


def _rst_block(text: str) -> str:
    """A description or epilog, written for --help's fixed layout, as a literal block."""
    return "::\n\n" + "\n".join("    " + line for line in text.rstrip().splitlines())


def rst_parser(name: str) -> argparse.ArgumentParser:
    """tm-<name>'s parser as its build_parser makes it, with its texts made safe for sphinx-argparse.

    sphinx-argparse reads help texts as reStructuredText, where the plain
    text of --help (``count_jobs(**kwargs)``, an indented list of commands)
    is markup or an error; the parser itself, and so --help, is unchanged.
    """
    parser = importlib.import_module(f"taskmaster.cli.{name}").build_parser()
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            action.help = _rst_text(action.help)
    if parser.description:
        parser.description = _rst_block(parser.description)
    if parser.epilog:
        parser.epilog = _rst_block(parser.epilog)
    return parser


def master() -> argparse.ArgumentParser:
    return rst_parser("master")


def slave() -> argparse.ArgumentParser:
    return rst_parser("slave")


def spawn() -> argparse.ArgumentParser:
    return rst_parser("spawn")


def run() -> argparse.ArgumentParser:
    return rst_parser("run")


def status() -> argparse.ArgumentParser:
    return rst_parser("status")


def ctl() -> argparse.ArgumentParser:
    return rst_parser("ctl")


def default_text(action: argparse.Action) -> str:
    """The default as the command's --help says it, else as the parser holds it."""
    text = (action.help or "") % {"default": action.default, "prog": ""} if action.help else ""
    said = _DEFAULT_IN_HELP.search(text)
    if said:
        return said.group(1)
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.default is None:
        return "none"
    return str(action.default)


def rows() -> list[tuple[str, list[str], str, str]]:
    """(flag, commands, variable, default) for every option, in the order the commands first take them."""
    table: dict[str, dict[str, Any]] = {}
    for command, parser in parsers():
        for action in parser._actions:
            flags = [flag for flag in action.option_strings if flag.startswith("--")]
            if not flags or action.help == argparse.SUPPRESS:
                continue
            row = table.setdefault(flags[0], {"commands": [], "defaults": {}, "dest": action.dest})
            row["commands"].append(command)
            if action.dest not in ("help", "version"):
                row["defaults"].setdefault(default_text(action), []).append(command)
    result = []
    for flag, row in table.items():
        from_environment = row["dest"] not in options.NOT_FROM_ENVIRONMENT
        variable = options.environment_variable(flag) if from_environment else "none: an action, not a setting"
        # Where the commands' defaults differ, each is shown with the commands it belongs to.
        defaults = {
            ("none" if text == "$" + variable else text): commands for text, commands in row["defaults"].items()
        }
        if len(defaults) > 1:
            default = "; ".join(f"{text} ({', '.join(commands)})" for text, commands in defaults.items())
        else:
            default = next(iter(defaults), "")
        result.append((flag, row["commands"], variable, default))
    return result


def _literal(text: str) -> str:
    return f"``{text}``" if text.startswith(options.ENV_PREFIX) else text


class OptionsTable(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        # Rebuilt when an option table or a command's parser changes, not only when this page does.
        for name in ["options", *(f"cli.{command}" for command in COMMANDS), "cli.common"]:
            self.env.note_dependency(importlib.import_module(f"taskmaster.{name}").__file__)
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 20 24 36 20",
            "",
            "   * - option",
            "     - commands",
            "     - variable",
            "     - default",
        ]
        for flag, commands, variable, default in rows():
            lines += [
                f"   * - ``{flag}``",
                f"     - {', '.join(commands)}",
                f"     - {_literal(variable)}",
                f"     - {_rst_text(default)}",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="tm-options"), self.content_offset, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("tm-options", OptionsTable)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
