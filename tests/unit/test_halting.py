"""--max-failures: what it accepts, and when it halts."""

from __future__ import annotations

import pytest

from taskmaster.failure_limit import MIN_RESOLVED_FOR_PERCENT, FailureLimit, parse


@pytest.mark.parametrize(
    "text, limit",
    [
        ("0", FailureLimit(count=0)),
        ("100", FailureLimit(count=100)),
        (" 7 ", FailureLimit(count=7)),
        ("5%", FailureLimit(percent=5.0)),
        ("2.5%", FailureLimit(percent=2.5)),
        ("0%", FailureLimit(percent=0.0)),
        ("99.9 %", FailureLimit(percent=99.9)),
    ],
)
def test_accepted(text, limit):
    assert parse(text) == limit


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5", "100%", "150%", "5%%", "%", "5 5", "1e3", "-5%"])
def test_refused_with_what_to_write(text):
    with pytest.raises(ValueError) as info:
        parse(text)
    message = str(info.value)
    assert repr(text) in message and "e.g. 100" in message and "e.g. 5%" in message


def test_shown_as_written():
    assert [str(parse(t)) for t in ("100", "5%", "2.5%")] == ["100", "5%", "2.5%"]


def test_a_count_halts_past_it_not_at_it():
    limit = parse("3")
    assert not limit.exceeded(3, 10)
    assert limit.exceeded(4, 10)
    assert "4 jobs failed for good in this run, more than --max-failures 3" in limit.describe(4, 10)


def test_a_percentage_is_judged_only_from_1000_resolved_on():
    limit = parse("5%")
    assert not limit.exceeded(500, MIN_RESOLVED_FOR_PERCENT - 1)  # half failed, but too early to say
    assert not limit.exceeded(50, 1000)  # exactly 5 %: not more
    assert limit.exceeded(51, 1000)
    assert limit.exceeded(101, 2000) and not limit.exceeded(100, 2000)
    assert "51 of 1000 jobs resolved in this run failed for good (5.1%)" in limit.describe(51, 1000)
