"""The master's two files, in-process: the state file and the failures file.

Save, load, and every kind of damage: a damaged file is refused with one
message saying how to go on, and is never changed by being refused.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmaster.errors import UsageError
from taskmaster.master import checkpoint
from taskmaster.master import failures_file as failures
from taskmaster.master.ledger import Ledger
from taskmaster.wire.ranges import to_ranges

TARGET, KWARGS = "jobs.py:get_jobs", {"n": "10"}


def saved_state(tmp_path, **changes) -> str:
    path = str(tmp_path / "run.state")
    state = checkpoint.State(TARGET, dict(KWARGS), position=4, has_anchor=True, anchor={"row": 4},
                             resolved=[[5, 7]], finished=6, failed=1, total=10)
    for key, value in changes.items():
        setattr(state, key, value)
    checkpoint.save(path, state)
    return path


# ---------------------------------------------------------------- state file


def test_a_saved_state_loads_back_as_it_was(tmp_path):
    path = saved_state(tmp_path)
    state = checkpoint.load(path, TARGET, KWARGS)
    assert (state.position, state.anchor, state.resolved, state.finished, state.failed, state.total) == (
        4, {"row": 4}, [[5, 7]], 6, 1, 10)
    assert state.has_anchor and not state.complete
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "the state file is the master's own"


def test_no_state_file_is_a_fresh_start(tmp_path):
    assert checkpoint.load(str(tmp_path / "none.state"), TARGET, KWARGS) is None


@pytest.mark.parametrize("damage, text", [
    ("garbage", b"\x00\x01 not json"),
    ("empty", b""),
    ("truncated", None),
    ("other-json", b'{"hello": "world"}'),
    ("wrong-version", None),
    ("wrong-types", None),
    ("bad-ranges", None),
    ("bad-anchor", None),
])  # fmt: skip
def test_a_damaged_state_file_is_refused_and_left_alone(tmp_path, damage, text):
    path = saved_state(tmp_path)
    doc = json.loads(open(path, "rb").read())
    if damage == "truncated":
        text = open(path, "rb").read()[:40]
    elif damage == "wrong-version":
        text = json.dumps({**doc, "version": 99}).encode()
    elif damage == "wrong-types":
        text = json.dumps({**doc, "position": "4"}).encode()
    elif damage == "bad-ranges":
        text = json.dumps({**doc, "resolved": [[1, 2, 3]]}).encode()
    elif damage == "bad-anchor":
        text = json.dumps({**doc, "anchor": "!!not base64!!"}).encode()
    with open(path, "wb") as f:
        f.write(text)
    with pytest.raises(UsageError, match=r"is corrupt .*move it away, or run with --reset"):
        checkpoint.load(path, TARGET, KWARGS)
    assert open(path, "rb").read() == text


def test_a_state_file_of_another_run_is_refused(tmp_path):
    path = saved_state(tmp_path)
    with pytest.raises(UsageError, match=r"belongs to target jobs.py:get_jobs with arguments n=10, not to .* n=11"):
        checkpoint.load(path, TARGET, {"n": "11"})


def test_an_unreadable_state_file_says_what_to_do(tmp_path):
    path = tmp_path / "run.state"
    path.mkdir()  # unreadable as a file even for root, unlike a chmod 000 file
    with pytest.raises(UsageError, match="cannot read state file .* fix its permissions, or pass --state-file"):
        checkpoint.load(str(path), TARGET, KWARGS)


def test_different_arguments_give_different_default_files():
    one = checkpoint.default_path(TARGET, {"n": "10"})
    assert one == checkpoint.default_path(TARGET, {"n": "10"})
    assert one != checkpoint.default_path(TARGET, {"n": "11"})
    assert os.path.basename(one).startswith("taskmaster-jobs.py.get_jobs-")


def test_the_saver_skips_a_save_that_would_change_nothing(tmp_path):
    path = str(tmp_path / "s.state")
    ledger = Ledger(8)
    saver = checkpoint.Saver(path, checkpoint.State(TARGET, KWARGS))
    saver.save(ledger, None)
    assert not os.path.exists(path), "nothing pulled yet: nothing to remember"
    ledger.add(list(range(5)))
    ledger.mark_done([(0, 2)])
    saver.save(ledger, None)
    first = os.stat(path).st_mtime_ns
    os.utime(path, ns=(0, 0))
    saver.save(ledger, None)
    assert os.stat(path).st_mtime_ns == 0, "an unchanged state was written again"
    ledger.mark_done([(2, 3)])
    saver.save(ledger, None)
    assert os.stat(path).st_mtime_ns >= first
    assert checkpoint.load(path, TARGET, KWARGS).position == 3


def test_a_failed_save_keeps_the_last_good_file_and_says_why(tmp_path):
    directory = tmp_path / "gone"
    directory.mkdir()
    path = str(directory / "s.state")
    ledger = Ledger(8)
    ledger.add(list(range(3)))
    saver = checkpoint.Saver(path, checkpoint.State(TARGET, KWARGS))
    saver.save(ledger, None)
    good = open(path, "rb").read()
    os.unlink(path)
    directory.rmdir()
    ledger.mark_done([(0, 1)])
    saver.save(ledger, None)
    assert saver.error and "cannot write the state file" in saver.error
    directory.mkdir()
    saver.save(ledger, None)
    assert saver.error is None and checkpoint.load(path, TARGET, KWARGS).position == 1
    assert good


@settings(deadline=None, max_examples=60)
@given(st.lists(st.integers(0, 29), unique=True), st.integers(1, 40))
def test_any_resolved_set_round_trips_through_the_file(tmp_path_factory, done, size):
    """What the file says is resolved is exactly what was, from its anchor on."""
    path = str(tmp_path_factory.mktemp("rt") / "s.state")
    ledger = Ledger(max(size, 30))
    ledger.add(list(range(30)))
    ledger.mark_done(to_ranges(done))
    checkpoint.Saver(path, checkpoint.State(TARGET, KWARGS)).save(ledger, None)
    state = checkpoint.load(path, TARGET, KWARGS)
    below = set(range(state.position))
    listed = {p for a, b in state.resolved for p in range(a, b)}
    assert below | listed == set(done) | (below & set(done)) and below <= set(done)
    assert state.finished == len(done)


# ---------------------------------------------------------- failures file


def entry(position: int, job, attempts: int = 1) -> dict:
    return failures.record(position, job, "ValueError", "bad row", "Traceback ...", attempts, "s-1")


def test_failures_are_appended_and_read_back_with_their_jobs(tmp_path):
    log = failures.FailureLog(str(tmp_path / "f.jsonl"))
    log.append(entry(3, {"row": 3}))
    log.append(entry(1, ("a", 1)))
    log.close()
    got = log.read()
    assert [(e["position"], e["value"], e["type"]) for e in got] == [(1, ("a", 1), "ValueError"),
                                                                    (3, {"row": 3}, "ValueError")]
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


def test_a_job_recorded_twice_counts_once_the_latest_winning(tmp_path):
    log = failures.FailureLog(str(tmp_path / "f.jsonl"))
    log.append(entry(3, "x", attempts=1))
    log.append(entry(3, "x", attempts=4))
    assert [(e["position"], e["attempts"]) for e in log.read()] == [(3, 4)]


@pytest.mark.parametrize("line", [b"not json", b'{"position": 1}', b'{"position": 1, "job": "@@@"}'])
def test_a_damaged_failures_line_is_named(tmp_path, line):
    path = tmp_path / "f.jsonl"
    log = failures.FailureLog(str(path))
    log.append(entry(0, "ok"))
    log.close()
    with open(path, "ab") as f:
        f.write(line + b"\n")
    before = path.read_bytes()
    with pytest.raises(UsageError, match="is corrupt at line 2 .* fix or remove that line"):
        log.read()
    assert path.read_bytes() == before


def test_the_failures_file_sits_beside_the_state_file():
    assert failures.default_path("/data/run.state") == "/data/run.failures.jsonl"
    assert failures.default_path("/data/run") == "/data/run.failures.jsonl"


def test_retries_then_a_record_then_resolved(tmp_path):
    from taskmaster.wire.protocol import Failure

    ledger = Ledger(4)
    ledger.add(["j0", "j1"])
    failed = failures.FailedJobs(str(tmp_path / "f.jsonl"), max_retries=2)
    for attempt in (1, 2):
        failed.failed(ledger, Failure(1, 1, "E", "m", "tb"), "s-1")
        assert ledger.is_pending(1) and ledger.attempts[1] == attempt
        assert ledger.retries[-1] == (1, "s-1"), "a retry avoids the slave it failed on"
    failed.failed(ledger, Failure(1, 1, "E", "m", "tb"), "s-2")
    assert not ledger.is_pending(1) and ledger.failed == 1
    [record] = failed.file.read()
    assert (record["position"], record["value"], record["attempts"], record["slave"]) == (1, "j1", 3, "s-2")
    failed.failed(ledger, Failure(1, 1, "E", "m", "tb"), "s-3")
    assert len(failed.file.read()) == 1, "a job resolved already is not recorded again"


def test_a_replay_rewrites_the_file_with_only_the_jobs_that_failed_again(tmp_path):
    from taskmaster.wire.protocol import Failure

    path = str(tmp_path / "f.jsonl")
    log = failures.FailureLog(path)
    for position in (4, 9):
        log.append(entry(position, f"job{position}"))
    log.close()
    replay = failures.FailedJobs(path, max_retries=0)
    jobs = replay.start_replay()
    assert jobs == ["job4", "job9"]
    ledger = Ledger(4)
    ledger.add(jobs)
    replay.failed(ledger, Failure(1, 1, "E", "again", "tb"), "s-1")
    ledger.mark_done([(0, 1)])
    replay.finish_replay()
    assert [(e["position"], e["message"]) for e in failures.FailureLog(path).read()] == [(9, "again")]
