"""The shutdown phases and the outcome of a run, on their own: times and counts in, decisions and words out."""

from __future__ import annotations

import signal

import pytest

from taskmaster.master.outcome import EndDetail, EndReason, Tally, build
from taskmaster.master.shutdown import QUIET_SECONDS, QUIT_LINGER_SECONDS, Phase, Shutdown


def test_a_stop_waits_for_the_jobs_in_flight_within_the_grace_and_a_second_one_ends_the_wait():
    s = Shutdown(grace=10.0, linger=0.0)
    assert s.phase is Phase.RUNNING and s.running
    assert s.stop(signal.SIGINT, now=100.0) is True
    assert s.phase is Phase.STOPPING and s.stop_signal == signal.SIGINT
    assert not s.wait_over(in_flight=3, now=109.0)
    assert s.wait_over(in_flight=0, now=101.0)  # nothing in flight: no reason to wait
    assert s.wait_over(in_flight=3, now=110.0)  # the grace ran out
    assert s.stop(signal.SIGTERM, now=102.0) is False  # again: now
    assert s.stop_signal == signal.SIGINT and s.wait_over(in_flight=3, now=102.0)


def test_a_disk_error_stops_at_once_but_not_a_run_already_closing():
    s = Shutdown(grace=10.0, linger=0.0)
    s.stop_now(signal.SIGTERM, now=5.0)
    assert s.phase is Phase.STOPPING and s.wait_over(in_flight=7, now=5.0)
    closing = Shutdown(grace=10.0, linger=0.0)
    closing.close(now=5.0, started=0.0)
    closing.stop_now(signal.SIGTERM, now=5.1)
    closing.stop(signal.SIGINT, now=5.1)
    assert closing.phase is Phase.CLOSING and closing.stop_signal is None


def test_lingering_ends_after_a_quiet_moment_or_at_the_latest_soon_after_the_end():
    s = Shutdown(grace=10.0, linger=0.0)
    s.close(now=50.0, started=0.0)
    assert s.phase is Phase.CLOSING
    assert not s.lingered(50.0 + QUIET_SECONDS / 2)
    assert s.lingered(50.0 + QUIET_SECONDS * 1.5)
    talkative = Shutdown(grace=10.0, linger=0.0)
    talkative.close(now=50.0, started=0.0)
    t = 50.0
    while t < 50.0 + QUIT_LINGER_SECONDS:
        assert not talkative.lingered(t)
        talkative.heard(t)  # a straggler every moment
        t += QUIET_SECONDS / 2
    assert talkative.lingered(50.0 + QUIT_LINGER_SECONDS + 0.01)  # never longer than that


def test_the_master_stays_until_linger_seconds_after_its_start():
    s = Shutdown(grace=10.0, linger=3.0)
    s.close(now=1.0, started=0.0)
    assert not s.lingered(2.9)
    assert s.lingered(3.01)
    assert not s.lingered(2.9, everyone_left=True)  # --linger holds even with no slave left


def test_lingering_ends_at_once_when_every_slave_said_goodbye():
    s = Shutdown(grace=10.0, linger=0.0)
    s.close(now=50.0, started=0.0)
    assert not s.lingered(50.0 + QUIET_SECONDS / 10)
    assert s.lingered(50.0 + QUIET_SECONDS / 10, everyone_left=True)


def tally(**kw) -> Tally:
    base = dict(finished=90, failed=0, duration=2.0, finished_overall=190, any_failed=False)
    return Tally(**{**base, **kw})


def detail(**kw) -> EndDetail:
    return EndDetail(**{"failures_path": "run.failures.jsonl", "state_path": "run.state", **kw})


@pytest.mark.parametrize(
    "reason, tally_kw, detail_kw, code, summary_start, error_part",
    [
        (EndReason.COMPLETE, {}, {}, 0, "90 finished, 0 failed in 2.0s (45 jobs/s); state in run.state", ""),
        (EndReason.COMPLETE, {"failed": 3, "any_failed": True}, {}, 1, "90 finished, 3 failed", ""),
        (EndReason.INTERRUPTED, {}, {"stop_signal": signal.SIGTERM}, 128 + signal.SIGTERM,
         "interrupted: 190 finished, run the same command to resume", ""),
        (EndReason.HALTED, {}, {"halt_reason": "3 of 10 failed"}, 1,
         "halted: 3 of 10 failed; fix the cause and run the same command to continue", ""),
        (EndReason.SOURCE_ERROR, {}, {"source_error": "Traceback: boom\n"}, 1, "90 finished", "get_jobs raised"),
        (EndReason.UNPICKLABLE, {}, {"unpicklable_error": "job at position 7 cannot be pickled"}, 2,
         "90 finished", "position 7"),
        (EndReason.COMPLETE, {}, {"problem": "cannot write run.state: disk full"}, 1, "90 finished",
         "disk full; fix that and run the same command to resume"),
    ],
)
def test_each_end_has_its_exit_code_and_words(reason, tally_kw, detail_kw, code, summary_start, error_part):
    outcome = build(reason, tally(**tally_kw), detail(**detail_kw))
    assert outcome.code == code and outcome.served
    assert outcome.summary.startswith(summary_start), outcome.summary
    assert error_part in outcome.error and bool(error_part) == bool(outcome.error)


def test_the_summary_says_where_failed_jobs_are_and_what_was_refused():
    outcome = build(EndReason.COMPLETE, tally(failed=2, any_failed=True, bad_messages=4, refusals=5), detail())
    assert "failed jobs are in run.failures.jsonl (replay them with --retry-failed)" in outcome.summary
    assert "4 malformed messages ignored" in outcome.summary and "5 connections refused" in outcome.summary
    replay = build(EndReason.COMPLETE, tally(), detail(state_path=None))
    assert "state in" not in replay.summary  # a replay of failures leaves the state file alone


def test_the_reason_is_what_tm_status_shows():
    assert [r.value for r in EndReason] == ["complete", "interrupted", "halted", "source-error", "unpicklable"]
