"""--log-format json: every line a command writes on stderr is one JSON object with the event's fields."""

from __future__ import annotations

import json
import re

import pytest
from conftest import handled, start_logged, tail, tcp_address, text, tm, wait_exit, wait_for, wait_listening

CORE = ("time", "level", "role", "message")


def json_lines(stderr: str) -> list[dict]:
    docs = []
    for line in stderr.splitlines():
        doc = json.loads(line)  # every line: one object, or the test fails here
        assert isinstance(doc, dict), line
        for key in CORE:
            assert key in doc, f"no {key!r} in {line}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"]), doc["time"]
        assert doc["level"] in ("debug", "info", "warning", "error")
        docs.append(doc)
    return docs


@pytest.mark.timeout(90)
def test_tm_run_with_json_logs_writes_only_json_with_event_fields(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_FAIL_EVERY": "25"}
    log_file = tmp_path / "run.jsonl"
    argv = tm("run", module, 2, "n=200", "--max-retries", "1", "--log-format", "json", "--log-file", log_file)
    result = procs.run(argv, env=env, timeout=60)
    assert result.returncode == 1, result.stderr  # 8 jobs fail for good
    docs = json_lines(result.stderr)
    assert {d["role"] for d in docs} == {"master", "slave"}

    # (a slave may start after a short run is over: told to quit at hello, it never joins)
    joined = [d for d in docs if d.get("event") == "slave_joined"]
    assert joined and all(isinstance(d["pid"], int) and d["slave"] for d in joined)
    slave_ids = {d["slave"] for d in docs if d["role"] == "slave"}  # a slave's lines carry its id
    assert {d["slave"] for d in joined} <= slave_ids and len(slave_ids) == 2

    failed = [d for d in docs if d.get("event") == "job_failed"]
    assert sorted(d["position"] for d in failed) == list(range(0, 200, 25))
    assert all(d["slave"] in slave_ids and d["attempts"] == 2 and d["level"] == "error" for d in failed)
    assert [d for d in docs if d.get("event") == "job_retried"]
    done = [d for d in docs if d.get("event") == "slave_done"]
    assert done and {d["slave"] for d in done} <= slave_ids and sum(d["finished"] for d in done) >= 192
    assert all(d["cpu_seconds"] > 0 and d["busy_seconds"] > 0 for d in done), done

    [summary] = [d for d in docs if d.get("event") == "summary"]
    assert (summary["finished"], summary["failed"], summary["exit_code"]) == (192, 8, 1)
    assert summary["finished"] == len(handled(record))
    assert "192 finished, 8 failed" in summary["message"]

    # The --log-file gets the same lines: the master's and every slave's
    in_file = json_lines(log_file.read_text())
    assert any(d.get("event") == "summary" for d in in_file) and {d["role"] for d in in_file} == {"master", "slave"}


@pytest.mark.timeout(90)
def test_a_resumed_master_logs_its_position_and_its_interruption_as_json(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.02"}
    address = tcp_address()
    argv = tm("master", module, "n=100000", "--address", address, "--log-format", "json")
    slave_argv = tm("slave", module, "--address", address, "--log-format", "json", "--retries", "50")
    first = start_logged(procs, argv, tmp_path / "m1.log", env)
    wait_listening(first, tmp_path / "m1.log")
    start_logged(procs, [*slave_argv, "--timeout", "300"], tmp_path / "s.log", env)
    wait_for(lambda: len(handled(record)) >= 50 and list(tmp_path.glob("*.state")), 60, what="a checkpoint")
    first.send_signal(2)
    assert wait_exit(first, 30, tmp_path / "m1.log") == 130, tail(tmp_path / "m1.log")
    [stopped] = [d for d in json_lines(text(tmp_path / "m1.log")) if d.get("event") == "summary"]
    assert stopped["message"].startswith("interrupted: ") and stopped["exit_code"] == 130
    position = json.loads(next(tmp_path.glob("*.state")).read_text())["position"]

    second = start_logged(procs, argv, tmp_path / "m2.log", env)
    [resumed] = wait_for(
        lambda: [d for d in json_lines(text(tmp_path / "m2.log")) if d.get("event") == "resumed"], 30, what="resume"
    )
    assert resumed["position"] == position and resumed["finished"] >= 50
    second.send_signal(2)
    assert wait_exit(second, 30, tmp_path / "m2.log") == 130
    json_lines(text(tmp_path / "m2.log"))
    json_lines(text(tmp_path / "s.log"))  # the slave's lines too, while it waited for the second master


@pytest.mark.timeout(60)
def test_tm_spawn_passes_json_logs_to_its_slaves(procs, tmp_path, recording):
    module, record, env = recording
    address = tcp_address()
    mlog = tmp_path / "master.log"
    master = start_logged(procs, tm("master", module, "n=100", "--address", address, "--no-progress"), mlog, env)
    wait_listening(master, mlog)
    spawn = procs.run(tm("spawn", module, 2, "--address", address, "--log-format", "json"), env=env, timeout=60)
    assert spawn.returncode == 0, spawn.stderr
    docs = json_lines(spawn.stderr)
    assert {d["role"] for d in docs} == {"slave"} and len({d["slave"] for d in docs}) == 2
    assert wait_exit(master, 30, mlog) == 0


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["master", "no_such_module_here"], "tm-master"),
        (["run", "no_such_module_here", "1"], "tm-run"),
        (["status", "--address", "tcp://127.0.0.1:1", "--timeout", "200"], "tm-status"),
    ],
)
def test_a_command_error_is_one_json_line(procs, argv, prog):
    result = procs.run(tm(*argv, "--log-format", "json"), timeout=30)
    [doc] = json_lines(result.stderr)
    if prog == "tm-status":
        assert result.returncode == 3 and "no master answered" in doc["message"]
    else:
        assert result.returncode == 2 and doc["level"] == "error" and doc["exit_code"] == 2
        assert "no_such_module_here" in doc["message"]


def test_a_bad_log_format_is_one_line(procs):
    result = procs.run(tm("master", "x", "--log-format", "xml"), timeout=30)
    assert result.returncode == 2 and "'xml' is not a log format: use text or json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
