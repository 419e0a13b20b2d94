"""The pace on its own: no master, no socket - what it lets go out for each setting and each moment.

``Pace`` is the one owner of paused, the rate limit (its token bucket) and
halted: tm-ctl and --max-failures change it, the hand-out asks it how many
jobs may go out (``allowance``) and says how many did (``took``); jobs given
back unstarted are refunded.  The bucket's own arithmetic is in
test_throttle.py; here, what the pace answers.
"""

from __future__ import annotations

from taskmaster.master.pace import BURST_SECONDS, Pace


def test_with_no_setting_every_job_wanted_may_go_out():
    pace = Pace(None, 0.0)
    assert not pace.holding
    assert pace.allowance(5000, 0.0) == 5000
    pace.took(5000)
    assert pace.allowance(5000, 0.0) == 5000  # no bucket to empty
    assert (pace.paused, pace.rate_limit, pace.halted) == (False, None, None)


def test_a_pause_lets_nothing_out_until_resumed():
    pace = Pace(None, 0.0)
    assert pace.pause() is True  # it was going on: tm-ctl logs "paused"
    assert pace.paused and pace.holding
    assert pace.allowance(10, 0.0) == 0
    assert pace.allowance(10, 100.0) == 0  # however long it lasts
    assert pace.resume() is True
    assert not pace.paused and not pace.holding
    assert pace.allowance(10, 100.0) == 10


def test_pausing_twice_or_resuming_a_running_pace_says_nothing_changed():
    pace = Pace(None, 0.0)
    assert pace.resume() is False  # not paused: nothing to log
    assert pace.pause() is True
    assert pace.pause() is False  # paused already
    assert pace.paused
    assert pace.resume() is True
    assert pace.resume() is False


def test_a_paused_rate_limited_pace_keeps_its_tokens_for_the_resume():
    pace = Pace(1000.0, 0.0)
    pace.pause()
    assert pace.allowance(10, 5.0) == 0
    pace.resume()
    assert pace.allowance(10, 5.0) == 10


def test_the_rate_limit_lets_out_a_burst_then_what_accrues():
    pace = Pace(1000.0, 0.0)
    burst = int(1000 * BURST_SECONDS)
    assert pace.allowance(5000, 0.0) == burst  # the bucket starts full
    pace.took(burst)
    assert pace.allowance(5000, 0.0) == 0  # empty: the request waits
    assert pace.allowance(5000, 0.01) == 10  # 10 ms at 1000 a second
    pace.took(10)
    assert pace.allowance(5000, 10.0) == burst  # never more than the burst, however long it waited


def test_jobs_given_back_unstarted_are_refunded():
    pace = Pace(1000.0, 0.0)
    pace.took(pace.allowance(5000, 0.0))
    pace.refund(30)
    assert pace.allowance(5000, 0.0) == 30
    pace.refund(10_000)  # more than the bucket holds: it holds its burst at most
    assert pace.allowance(5000, 0.0) == int(1000 * BURST_SECONDS)


def test_a_rate_set_live_applies_from_then_on():
    pace = Pace(None, 0.0)
    pace.set_rate(1000.0, 0.0)
    assert pace.rate_limit == 1000.0
    assert pace.allowance(5000, 0.0) == 100  # a fresh bucket, full
    pace.took(100)
    pace.set_rate(10.0, 1.0)  # lowered: what accrued is capped to the new burst
    assert pace.allowance(5000, 1.0) == 1
    pace.set_rate(None, 1.0)  # tm-ctl rate off
    assert pace.rate_limit is None
    assert pace.allowance(5000, 1.0) == 5000


def test_a_rate_of_zero_is_no_limit_however_it_is_set():
    """0 means no limit: at the start (as MasterConfig(rate=0) always did), and set live."""
    started = Pace(0, 0.0)
    assert started.allowance(50, 0.0) == 50
    live = Pace(None, 0.0)
    live.set_rate(0, 0.0)
    assert live.allowance(50, 0.0) == 50
    live.took(50)
    assert live.allowance(50, 10.0) == 50  # not one job, then none for ever


def test_a_halt_lets_nothing_out_and_a_resume_does_not_lift_it():
    pace = Pace(None, 0.0)
    pace.halt("more than 2 jobs failed (3 of 10)")
    assert pace.halted == "more than 2 jobs failed (3 of 10)"
    assert pace.holding
    assert pace.allowance(10, 0.0) == 0
    assert pace.resume() is False  # tm-ctl resume: it was not paused, and the halt stays
    assert pace.holding and pace.allowance(10, 1.0) == 0


def test_a_halt_while_paused_outlasts_the_resume():
    pace = Pace(100.0, 0.0)
    pace.pause()
    pace.halt("more than 0 jobs failed (1 of 1)")
    assert pace.resume() is True
    assert not pace.paused and pace.holding
    assert pace.allowance(10, 5.0) == 0
