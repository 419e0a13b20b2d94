"""Command-line parsing, in-process through each command's ``main(argv)``.

Every bad argument gets one line on stderr - the command's name, what is
wrong, how to fix it - and exit code 2, before anything is read, written or
started.  tests/e2e/test_bad_input.py keeps one subprocess case per command, so
the real console entry points are still covered.
"""

from __future__ import annotations

import os

import pytest

from taskmaster.cli import master, run, slave, spawn
from taskmaster.cli import status as status_cli
from taskmaster.master import checkpoint

MAINS = {"master": master.main, "slave": slave.main, "spawn": spawn.main, "run": run.main}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory holding a saved state, as the bad commands run in it: it must not change."""
    monkeypatch.chdir(tmp_path)
    path = checkpoint.default_path(os.path.abspath("jobs.py") + ":get_jobs", {"n": "5000"})
    checkpoint.save(path, checkpoint.State("jobs", {"n": "5000"}, position=7, has_anchor=True, anchor=7))
    (tmp_path / "jobs.py").write_text("def get_jobs(last=0, n=0):\n    yield 1\n\ndef handle_job(i):\n    pass\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    yield tmp_path
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "a refused command changed files"


def refused(capsys, command: str, argv: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        MAINS[command](argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tm-{command}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def with_n(command: str, target: str = "jobs.py") -> list[str]:
    if command == "master":
        return [target, "n=5000", "--no-progress"]
    if command == "slave":
        return [target, "--no-progress"]
    if command == "spawn":
        return [target, "2", "--no-progress"]
    return [target, "2", "n=5000", "--no-progress"]


@pytest.mark.parametrize("command", ["master", "run"])
@pytest.mark.parametrize("item, fragment", [
    ("n5000", "'n5000' is not key=value"),
    ("=5", "is not a valid argument name"),
    ("1n=5", "is not a valid argument name"),
    ("last=5", "'last' is reserved"),
])  # fmt: skip
def test_bad_key_value(capsys, workdir, command, item, fragment):
    argv = ["jobs.py", *(["2"] if command == "run" else []), item, "--no-progress"]
    refused(capsys, command, argv, fragment)


@pytest.mark.parametrize("command", ["spawn", "run"])
@pytest.mark.parametrize("n", ["0", "-1", "two", "1.5", ""])
def test_n_not_a_positive_integer(capsys, workdir, command, n):
    refused(capsys, command, ["jobs.py", n, "--no-progress"], "argument N", "is not a positive integer")


ADDRESSES = ["tcp://127.0.0.1", "127.0.0.1:3050", "tcp://127.0.0.1:70000", "tcp://127.0.0.1:0",
             "udp://127.0.0.1:3050", "ipc://", "tcp://:3050"]  # fmt: skip


@pytest.mark.parametrize("command", sorted(MAINS))
@pytest.mark.parametrize("address", ADDRESSES)
def test_malformed_address(capsys, workdir, command, address):
    refused(capsys, command, [*with_n(command), "--address", address], "--address", repr(address),
            "is not an address", "tcp://HOST:PORT")


def test_malformed_address_for_tm_status(capsys, workdir):
    with pytest.raises(SystemExit) as exit_info:
        status_cli.main(["--address", "udp://x:1"])
    assert exit_info.value.code == 2
    assert "is not an address" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(MAINS))
@pytest.mark.parametrize("flag, value, fragment", [
    ("--log-level", "loud", "is not one of debug, info, warning, error"),
    ("--grace", "-1", "is not a positive number"),
    ("--grace", "inf", "is not a positive number"),
    ("--grace", "nan", "is not a positive number"),
])  # fmt: skip
def test_bad_values_of_shared_options(capsys, workdir, command, flag, value, fragment):
    refused(capsys, command, [*with_n(command), flag, value], fragment)


@pytest.mark.parametrize("command, flag, value, fragment", [
    ("master", "--size", "0", "is not a positive integer"),
    ("master", "--max-retries", "-1", "is not a whole number >= 0"),
    ("master", "--checkpoint-every", "0", "is not a positive number"),
    ("master", "--linger", "-2", "is not a number >= 0"),
    ("master", "--lease-timeout", "soon", "is not a positive number"),
    ("slave", "--concurrency", "0", "is not a positive integer"),
    ("slave", "--timeout", "1.5", "is not a positive integer"),
    ("slave", "--job-timeout", "0", "is not a positive number"),
    ("spawn", "--retries", "x", "is not a positive integer"),
    ("run", "--size", "-5", "is not a positive integer"),
    ("run", "--concurrency", "many", "is not a positive integer"),
])  # fmt: skip
def test_bad_values_of_role_options(capsys, workdir, command, flag, value, fragment):
    refused(capsys, command, [*with_n(command), flag, value], flag, fragment)


@pytest.mark.parametrize("command", sorted(MAINS))
def test_unknown_option_names_the_help(capsys, workdir, command):
    refused(capsys, command, [*with_n(command), "--no-such-flag"], "--no-such-flag", f"see tm-{command} --help")
