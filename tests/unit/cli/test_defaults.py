"""Defaults have one source: MasterConfig and SlaveConfig (taskmaster.config).

The option tables, and through them every command, tm-run, tm-spawn and
taskmaster.run, take their defaults from those classes; these tests check
that the tables write none of their own and that what the commands build from
their defaults is the classes' defaults.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from taskmaster import options
from taskmaster.cli import master as master_cli
from taskmaster.cli import slave as slave_cli
from taskmaster.config import DEFAULT_ADDRESS, MasterConfig, SlaveConfig
from taskmaster.launch import local as api

# option dest -> (config class, field) for every option that is a setting of the classes
SETTINGS = {
    "size": (MasterConfig, "size"),
    "reset": (MasterConfig, "reset"),
    "retry_failed": (MasterConfig, "retry_failed"),
    "total": (MasterConfig, "total"),
    "checkpoint_every": (MasterConfig, "checkpoint_interval"),
    "linger": (MasterConfig, "linger"),
    "lease_timeout": (MasterConfig, "lease_timeout"),
    "max_retries": (MasterConfig, "max_retries"),
    "metrics_address": (MasterConfig, "metrics_address"),
    "rate": (MasterConfig, "rate"),
    "max_failures": (MasterConfig, "max_failures"),
    "grace": (MasterConfig, "grace"),
    "concurrency": (SlaveConfig, "concurrency"),
    "timeout": (SlaveConfig, "timeout_ms"),
    "retries": (SlaveConfig, "retries"),
    "job_timeout": (SlaveConfig, "job_timeout"),
    "wait_for_master": (SlaveConfig, "wait_for_master"),
}
TABLES = options.MASTER_OPTIONS + options.SLAVE_OPTIONS + options.SHARED_OPTIONS


def field_default(cls: type, name: str):
    [field] = [f for f in dataclasses.fields(cls) if f.name == name]
    return field.default


@pytest.mark.parametrize("dest", sorted(SETTINGS))
def test_each_option_defaults_to_its_config_field(dest):
    [opt] = [o for o in TABLES if o.dest == dest]
    assert opt.default == field_default(*SETTINGS[dest])


def test_every_setting_of_the_tables_is_known_here():
    # A new option that is a setting of the classes must be added to SETTINGS.
    not_settings = {"state_file", "failures_file", "result_file", "secret_file", "no_job_repr", "insecure"}
    assert {o.dest for o in TABLES} - not_settings == set(SETTINGS)


def test_the_tables_write_no_default_of_their_own():
    """In options.py, no Option(...) of a setting has a literal default: it names the class's."""
    source = Path(options.__file__).read_text()
    for call in ast.walk(ast.parse(source)):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Option":
            flag = call.args[0].value
            dest = flag.lstrip("-").replace("-", "_")
            if dest in SETTINGS or dest in ("no_progress", "no_job_repr"):
                default = call.args[2]
                assert not isinstance(default, ast.Constant), f"{flag}: write its default in taskmaster.config"


def test_help_shows_the_classes_defaults(capsys):
    with pytest.raises(SystemExit):
        master_cli.main(["--help"])
    out = capsys.readouterr().out
    assert f"(default: {MasterConfig.grace})" in out
    assert f"(default: {MasterConfig.lease_timeout})" in out


def test_the_commands_build_the_classes_defaults(tmp_path):
    """tm-master and tm-slave with no options mean MasterConfig() and SlaveConfig()."""
    args = master_cli.build_parser().parse_args(["jobs.py"])
    for dest, (cls, name) in SETTINGS.items():
        if cls is MasterConfig:
            assert getattr(args, dest) == getattr(MasterConfig(), name), dest
    assert args.address == DEFAULT_ADDRESS == MasterConfig().address
    assert (not args.no_progress) == MasterConfig().progress
    args = slave_cli.build_parser().parse_args(["jobs.py"])
    for dest, (cls, name) in SETTINGS.items():
        if cls is SlaveConfig:
            assert getattr(args, dest) == getattr(SlaveConfig(), name), dest
    assert args.grace == SlaveConfig().grace == MasterConfig().grace
    assert args.address == SlaveConfig().address


def test_taskmaster_run_takes_the_same_defaults():
    values = vars(api.option_parser().parse_args([]))
    for dest, (cls, name) in SETTINGS.items():
        assert values[dest] == field_default(cls, name), dest
