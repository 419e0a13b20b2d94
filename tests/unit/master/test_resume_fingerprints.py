"""What a resume skips: jobs known finished by their fingerprint, never positions alone."""

from __future__ import annotations

import logging

from taskmaster.master import checkpoint
from taskmaster.master.identity import FinishedBefore, fingerprint
from taskmaster.master.ledger import Ledger
from taskmaster.wire.ranges import expand


def resumed_ledger(size: int, start: int, finished: list, positions: list[int]) -> Ledger:
    before = FinishedBefore(positions, [fingerprint(j) for j in finished], size)
    return Ledger(size, start=start, before=before)


def handed(ledger: Ledger, n: int = 1000) -> list:
    jobs, _ = ledger.take(n, "s", alone=True)
    return jobs


def test_jobs_that_vanished_from_the_iterator_do_not_make_others_skipped(caplog):
    # The last run: anchor "b" at position 1; "c" and "e" finished after it.
    ledger = resumed_ledger(10, 1, ["c", "e"], [2, 4])
    # This run's iterator no longer yields the finished ones: "d" now stands where "c" did.
    with caplog.at_level(logging.WARNING, "taskmaster.master"):
        ledger.add(["b", "d", "f", "g"])
    assert handed(ledger) == ["b", "d", "f", "g"]
    assert caplog.text.count("yields another sequence") == 1


def test_a_stable_iterator_still_skips_what_finished():
    ledger = resumed_ledger(10, 1, ["c", "e"], [2, 4])
    ledger.add(["b", "c", "d", "e", "f"])
    assert handed(ledger) == ["b", "d", "f"]


def test_a_reordered_iterator_skips_a_finished_job_wherever_it_now_stands():
    ledger = resumed_ledger(10, 1, ["c"], [2])
    ledger.add(["b", "x", "y", "c"])
    assert handed(ledger) == ["b", "x", "y"]


def test_a_job_finished_twice_is_skipped_twice_and_no_more():
    ledger = resumed_ledger(10, 0, ["a", "a"], [1, 2])
    ledger.add(["z", "a", "a", "a"])
    assert handed(ledger) == ["z", "a"]


def test_a_resolved_job_nobody_was_handed_is_never_handed_once_the_ring_wraps_onto_it():
    # --size 5 exactly: a ring of 5 slots.  The anchor was resolved (the last job
    # pulled), so the resume skips it at once; five later jobs fill every slot,
    # the anchor's included.  Its position must not be handed out with their value.
    ledger = resumed_ledger(5, 10, [10], [10])
    ledger.add([10])
    ledger.add([11, 12, 13, 14, 15])
    assert handed(ledger) == [11, 12, 13, 14, 15]


def test_the_checkpoint_names_resolved_jobs_and_those_still_owed(tmp_path):
    ledger = resumed_ledger(10, 1, ["x"], [7])  # "x" finished at position 7 last time, not reached yet
    ledger.add(["b", "c", "d"])
    jobs, ranges = ledger.take(3, "s", alone=True)
    ledger.mark_done([(2, 3)])  # "c"
    position, value, resolved, prints = ledger.anchor()
    assert (position, value) == (1, "b")
    assert expand(resolved) == [2, 7] and prints == [fingerprint("c"), fingerprint("x")]
    path = str(tmp_path / "s.state")
    state = checkpoint.State("t", {}, position=position, has_anchor=True, anchor=value, resolved=resolved,
                             prints=prints)
    checkpoint.save(path, state)
    assert checkpoint.load(path, "t", {}).prints == prints


def test_a_state_file_without_fingerprints_skips_nothing(tmp_path, caplog):
    from taskmaster.master.start import _finished_before

    state = checkpoint.State("t", {}, position=3, has_anchor=True, anchor=3, resolved=[[4, 6]])
    with caplog.at_level(logging.WARNING, "taskmaster.master"):
        before = _finished_before(state, 10)
    assert not before.active
    assert "by position only" in caplog.text


def test_two_jobs_failed_at_one_position_in_two_runs_are_both_kept(tmp_path):
    """A resumed get_jobs may yield another sequence: one position can name two jobs failed for good."""
    from taskmaster.master import failures_file as failures

    log = failures.FailureLog(str(tmp_path / "f.jsonl"))
    log.append(failures.record(33, 340, "JobTimeout", "too long", "", 3, "s1"))  # the first run's job 33
    log.append(failures.record(33, 420, "ValueError", "bad", "", 3, "s2"))  # the resumed run's job 33
    log.append(failures.record(33, 420, "ValueError", "bad", "", 3, "s2"))  # recorded again after a crash
    log.close()
    assert sorted(entry["value"] for entry in log.read()) == [340, 420]
