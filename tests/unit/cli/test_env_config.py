"""Options from TASKMASTER_<OPTION> variables, in-process: every command's parser, the command line winning,
one-line errors naming the variable, and children of tm-run / tm-spawn that read no variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import taskmaster
from taskmaster.cli import common, ctl, master, run, slave, spawn, status
from taskmaster.errors import UsageError
from taskmaster.launch import local as api

# Each command's parser and the positional arguments it needs.
COMMANDS = {
    "tm-master": (master.build_parser, ["jobs.py"]),
    "tm-slave": (slave.build_parser, ["jobs.py"]),
    "tm-spawn": (spawn.build_parser, ["jobs.py", "2"]),
    "tm-run": (run.build_parser, ["jobs.py", "2"]),
    "tm-status": (status.build_parser, []),
    "tm-ctl": (ctl.build_parser, ["pause"]),
}
MAINS = {"tm-master": master.main, "tm-slave": slave.main, "tm-spawn": spawn.main, "tm-run": run.main}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No TASKMASTER_ variable from the machine running the tests leaks into these."""
    for name in list(os.environ):
        if name.startswith(common.ENV_PREFIX):
            monkeypatch.delenv(name)


def parse(command: str, *argv: str):
    build, positionals = COMMANDS[command]
    return build(command).parse_intermixed_args([*positionals, *argv])


def sample_text(option: common.Option) -> tuple[str, object]:
    """A valid text for the option's variable and the value it parses to."""
    if option.dest == "log_level":
        return "debug", "debug"
    samples = {
        common.positive_int: ("7", 7),
        common.non_negative_int: ("0", 0),
        common.positive_float: ("2.5", 2.5),
        common.non_negative_float: ("0", 0.0),
        str: ("some-value", "some-value"),
        None: ("yes", True),
    }
    if option.kind in samples:
        return samples[option.kind]
    # Options with a parser of their own: a valid text, and what their parser makes of it.
    text = {"log_level": "debug", "log_format": "json", "metrics_address": "127.0.0.1:9090"}.get(option.dest, "5")
    return text, option.kind(text)


@pytest.mark.parametrize(
    "command, tables",
    [
        ("tm-master", common.MASTER_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS),
        ("tm-slave", common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS),
        ("tm-spawn", common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS),
        (
            "tm-run",
            common.MASTER_OPTIONS + common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS,
        ),
    ],
)
def test_every_option_of_every_command_comes_from_its_variable(monkeypatch, command, tables):
    for option in tables:
        text, value = sample_text(option)
        monkeypatch.setenv(common.environment_variable(option.flag), text)
    args = parse(command)
    for option in tables:
        assert getattr(args, option.dest) == sample_text(option)[1], option.flag


def test_variable_names_follow_the_flags():
    assert common.environment_variable("--secret-file") == "TASKMASTER_SECRET_FILE"
    assert common.environment_variable("--no-progress") == "TASKMASTER_NO_PROGRESS"
    assert common.environment_variable("--wait-for-master") == "TASKMASTER_WAIT_FOR_MASTER"
    names = common.option_variables(slave.build_parser())
    assert {"TASKMASTER_ADDRESS", "TASKMASTER_CONCURRENCY", "TASKMASTER_SECRET_FILE"} <= names
    assert "TASKMASTER_HELP" not in names and "TASKMASTER_VERSION" not in names


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_address_and_secret_file_from_the_environment_in_every_command(monkeypatch, command):
    monkeypatch.setenv("TASKMASTER_ADDRESS", "tcp://127.0.0.1:4567")
    monkeypatch.setenv("TASKMASTER_SECRET_FILE", "/run/secrets/taskmaster")
    args = parse(command)
    assert args.address == "tcp://127.0.0.1:4567"
    assert args.secret_file == "/run/secrets/taskmaster"


def test_tm_status_timeout_and_json_from_the_environment(monkeypatch):
    monkeypatch.setenv("TASKMASTER_TIMEOUT", "900")
    monkeypatch.setenv("TASKMASTER_JSON", "true")
    args = parse("tm-status")
    assert args.timeout == 900 and args.json is True


def test_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("TASKMASTER_CONCURRENCY", "50")
    monkeypatch.setenv("TASKMASTER_ADDRESS", "tcp://127.0.0.1:4567")
    monkeypatch.setenv("TASKMASTER_NO_PROGRESS", "0")
    args = parse("tm-slave", "--concurrency", "3", "--address", "ipc:///tmp/x.sock", "--no-progress")
    assert (args.concurrency, args.address, args.no_progress) == (3, "ipc:///tmp/x.sock", True)
    assert parse("tm-slave").concurrency == 50


@pytest.mark.parametrize(
    "text, expected",
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("false", False), ("No", False)],
)
def test_switch_words(monkeypatch, text, expected):
    monkeypatch.setenv("TASKMASTER_NO_PROGRESS", text)
    assert parse("tm-master").no_progress is expected


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("TASKMASTER_SECRET_FILE", "")
    monkeypatch.setenv("TASKMASTER_CONCURRENCY", "")
    args = parse("tm-slave")
    assert args.secret_file is None and args.concurrency == 10


def test_other_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("TASKMASTER_NOT_AN_OPTION", "x")
    monkeypatch.setenv("TASKMASTER_NEW_SECRET", "/tmp/nope")  # an action, not a setting
    assert parse("tm-master").target == "jobs.py"


@pytest.mark.parametrize(
    "command, variable, text, message",
    [
        ("tm-slave", "TASKMASTER_CONCURRENCY", "x", "TASKMASTER_CONCURRENCY='x' is not a positive integer"),
        ("tm-master", "TASKMASTER_SIZE", "-3", "TASKMASTER_SIZE='-3' is not a positive integer"),
        ("tm-spawn", "TASKMASTER_WAIT_FOR_MASTER", "soon", "TASKMASTER_WAIT_FOR_MASTER='soon' is not a number >= 0"),
        ("tm-run", "TASKMASTER_ADDRESS", "localhost", "TASKMASTER_ADDRESS='localhost' is not an address: use tcp://"),
        ("tm-master", "TASKMASTER_RESET", "maybe", "TASKMASTER_RESET='maybe' is not a switch: use 1, true, yes"),
        ("tm-slave", "TASKMASTER_LOG_LEVEL", "loud", "TASKMASTER_LOG_LEVEL='loud' is not one of debug"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_exit_2(monkeypatch, capsys, command, variable, text, message):
    monkeypatch.setenv(variable, text)
    _, positionals = COMMANDS[command]
    with pytest.raises(SystemExit) as exit:
        MAINS[command](positionals)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{command}: error: {err.splitlines()[0].split(': error: ', 1)[1]}"]
    assert err.startswith(f"{command}: error: {message}"), err
    assert err.rstrip().endswith(f"(see {command} --help)"), err


def test_a_bad_log_level_on_the_command_line_still_names_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("TASKMASTER_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit):
        slave.main(["jobs.py", "--log-level", "quiet"])
    assert "error: --log-level 'quiet' is not one of" in capsys.readouterr().err


def test_help_mentions_the_variables(capsys):
    with pytest.raises(SystemExit):
        slave.main(["--help"])
    assert "TASKMASTER_<OPTION>" in capsys.readouterr().out


def test_children_of_tm_run_and_tm_spawn_get_no_option_variable(monkeypatch):
    monkeypatch.setenv("TASKMASTER_CONCURRENCY", "50")
    monkeypatch.setenv("TASKMASTER_SECRET_FILE", "/run/secret")
    monkeypatch.setenv("TASKMASTER_RUN_DIR", "/shared/run")  # not an option: a script's own setting
    monkeypatch.setenv("TM_RECORD", "/tmp/record")
    for parser in (api.option_parser(), spawn.build_parser()):
        env = common.child_environment(parser)
        assert "TASKMASTER_CONCURRENCY" not in env and "TASKMASTER_SECRET_FILE" not in env
        assert env["TASKMASTER_RUN_DIR"] == "/shared/run" and env["TM_RECORD"] == "/tmp/record"


def test_the_python_api_reads_the_variables_too(monkeypatch):
    monkeypatch.setenv("TASKMASTER_MAX_RETRIES", "lots")
    with pytest.raises(UsageError, match="TASKMASTER_MAX_RETRIES='lots' is not a whole number >= 0"):
        taskmaster.run("jobs.py", processes=1)


def test_a_child_of_tm_run_does_not_take_a_variable_its_parent_overrode(tmp_path):
    """A real run: the variable says a log level the children would refuse; the command line says the default.

    tm-run passes only non-default settings on; a child reading the variable
    would fail where its parent, whose command line won, did not.
    """
    jobs = tmp_path / "jobs.py"
    jobs.write_text("def get_jobs(last=0):\n    yield from range(int(last), 20)\n\ndef handle_job(i):\n    pass\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "TASKMASTER_LOG_LEVEL": "loud",
        "TASKMASTER_CONCURRENCY": "x",
        "TASKMASTER_NO_PROGRESS": "1",
    }
    argv = [sys.executable, "-m", "taskmaster", "run", str(jobs), "2", "--log-level", "info", "--concurrency", "10"]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "20 finished, 0 failed" in result.stderr, result.stderr
    assert "error" not in result.stderr
