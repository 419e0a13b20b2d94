"""The --rate token bucket on a simulated clock: what goes out over any window, live changes, refunds."""

from __future__ import annotations

import pytest

from taskmaster.master.pace import BURST_SECONDS, Throttle


def hand_out(
    throttle: Throttle, start: float, seconds: float, want: int, step: float = 0.001
) -> list[tuple[float, int]]:
    """Requests of `want` jobs every `step` seconds, each served with what the bucket allows: (time, jobs)."""
    grants = []
    t = start
    while t < start + seconds:
        n = throttle.allowance(want, t)
        if n:
            throttle.take(n)
            grants.append((t, n))
        t += step
    return grants


def most_in_window(grants: list[tuple[float, int]], window: float) -> int:
    best, total, first = 0, 0, 0
    for t, n in grants:
        total += n
        while grants[first][0] <= t - window:
            total -= grants[first][1]
            first += 1
        best = max(best, total)
    return best


@pytest.mark.parametrize("rate", [0.5, 7, 200, 5000, 250_000])
@pytest.mark.parametrize("want", [1, 30, 20_000])
def test_any_ten_second_window_holds_within_five_percent(rate, want):
    throttle = Throttle(rate, now=0.0)
    grants = hand_out(throttle, 0.0, 40.0, want)
    busiest = most_in_window(grants, 10.0)
    assert busiest <= 10 * rate * 1.05 + 1, (busiest, rate)
    if want * 1000 >= 2 * rate:  # requests ask for enough ("enough slaves"): the rate is reached, too
        steady = sum(n for t, n in grants if 10.0 <= t < 40.0)
        assert steady >= 30 * rate * 0.95 - 1, (steady, rate)


def test_a_request_waits_for_tokens_and_gets_no_more_than_there_are():
    throttle = Throttle(100, now=0.0)
    assert throttle.allowance(1000, 0.0) == 100 * BURST_SECONDS  # the burst: 0.1 s worth
    throttle.take(10)
    assert throttle.allowance(1, 0.0) == 0  # empty: the request is parked
    assert throttle.allowance(5, 0.03) == 3  # 3 tokens accrued in 30 ms: a smaller batch, at once
    assert throttle.allowance(1000, 10.0) == 10  # never more than the burst, however long it waited


def test_a_high_rate_does_not_cut_batches_into_crumbs():
    throttle = Throttle(1_000_000, now=0.0)
    throttle.take(int(throttle.tokens))
    assert throttle.allowance(5000, 0.0001) == 0  # 100 tokens: not worth a batch yet
    assert throttle.allowance(50, 0.0001) == 50  # ... unless that is all it wants
    assert throttle.allowance(5000, 0.002) == 2000


def test_a_live_change_takes_effect_at_once():
    throttle = Throttle(1000, now=0.0)
    hand_out(throttle, 0.0, 5.0, 100)
    throttle.set_rate(10, now=5.0)
    assert throttle.tokens <= 1  # what the old rate let accrue is not a burst at the new one
    grants = hand_out(throttle, 5.0, 10.0, 100)
    assert sum(n for _, n in grants) <= 10 * 10 + 1
    throttle.set_rate(2000, now=15.0)
    grants = hand_out(throttle, 15.0, 10.0, 100)
    assert sum(n for _, n in grants) >= 10 * 2000 * 0.95


def test_refunds_never_grow_the_bucket_past_its_burst():
    throttle = Throttle(50, now=0.0)
    throttle.take(5)
    throttle.refund(3)
    assert throttle.tokens == 50 * BURST_SECONDS - 2
    throttle.refund(1000)  # a pause gave back every unstarted job
    assert throttle.tokens == 50 * BURST_SECONDS
