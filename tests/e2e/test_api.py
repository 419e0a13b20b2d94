"""taskmaster.run: job arguments and options never mix, and the caller's process is left alone."""

from __future__ import annotations

import sys

import pytest
from conftest import handled, write_module

import taskmaster

# get_jobs takes arguments named like run()'s options.
JOBS = """
import os

def get_jobs(last=0, size="3", timeout="0", grace="0", total="0"):
    for i in range(int(last), int(size) + int(timeout) + int(grace) + int(total)):
        yield i

def handle_job(i):
    fd = os.open(os.environ["TM_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{i}\\n".encode())
    os.close(fd)
"""


@pytest.fixture
def jobs_module(tmp_path, monkeypatch):
    record = tmp_path / "handled.txt"
    monkeypatch.setenv("TM_RECORD", str(record))
    return write_module(tmp_path / "", "optionlike_jobs", JOBS), record


@pytest.mark.timeout(90)
def test_job_arguments_named_like_options_reach_get_jobs(tmp_path, jobs_module):
    module, record = jobs_module
    result = taskmaster.run(
        str(module),
        processes=1,
        job_args={"size": 7, "timeout": 2, "grace": 1, "total": 3},
        size=5,  # the option: at most 5 jobs held at once
        state_file=str(tmp_path / "run.state"),
    )
    assert result.exit_code == 0, (result.summary, result.error)
    assert sorted(handled(record)) == list(range(13))
    assert result.finished == 13


@pytest.mark.timeout(90)
def test_run_leaves_the_callers_sys_path_and_modules_alone(tmp_path, jobs_module):
    module, record = jobs_module
    path_before, modules_before = list(sys.path), set(sys.modules)
    result = taskmaster.run(str(module), processes=1, state_file=str(tmp_path / "a.state"))
    assert result.exit_code == 0, (result.summary, result.error)
    assert sorted(handled(record)) == [0, 1, 2]
    assert sys.path == path_before
    new = set(sys.modules) - modules_before
    assert not [name for name in new if "optionlike" in name or name.startswith("taskmaster_user_")], new


def test_an_unknown_option_is_a_type_error_that_points_to_job_args(tmp_path, jobs_module):
    module, _ = jobs_module
    with pytest.raises(TypeError, match=r"unknown option\(s\) rows: .*job_args=\{\.\.\.\}"):
        taskmaster.run(str(module), processes=1, rows=10)


@pytest.mark.timeout(60)
def test_a_bad_target_is_one_usage_error_and_the_caller_imports_nothing(tmp_path):
    broken = write_module(tmp_path, "no_handler", "def get_jobs(last=0):\n    yield 1\n")
    with pytest.raises(taskmaster.UsageError, match=r"has no function 'handle_job'"):
        taskmaster.run(str(broken), processes=1, state_file=str(tmp_path / "b.state"))
    assert str(tmp_path) not in sys.path
    assert not [name for name in sys.modules if name.startswith("taskmaster_user_")]
