"""The ledger keeps values only for the jobs in its window (and the checkpoint's anchor).

Its ring can be far larger than the window (it stretches for tiny jobs), so a
value left in a slot after its job resolved would hold memory the window no
longer accounts for; and a slot reused by a live job must never be cleared.
"""

from __future__ import annotations

import random

import pytest

from taskmaster.master.ledger import Ledger


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("stretch", [1, 3])
def test_values_held_are_the_window_and_the_anchor(seed, stretch):
    rng = random.Random(seed)
    ledger = Ledger(8, stretch=stretch)
    if stretch > 1 and rng.random() < 0.5:
        ledger.stretch(True)
    pulled = 0
    for _ in range(400):
        room = ledger.space()
        if room:
            n = rng.randint(1, room)
            ledger.add([f"job-{p}" for p in range(pulled, pulled + n)])
            pulled += n
        jobs, ranges = ledger.take(rng.randint(1, 6), "s", alone=True)
        for a, b in ranges:
            if rng.random() < 0.8:
                done = rng.randint(a, b - 1)
                ledger.mark_done([(a, done + 1)])
            else:
                ledger.requeue([(a, b)])
        for p in range(ledger.low, ledger.high):  # every job in the window has its value
            assert ledger.value(p) == f"job-{p}"
        held = sum(v is not None for v in ledger.values)
        assert held <= (ledger.high - ledger.low) + 1
        anchor = ledger.anchor()
        if anchor is not None:
            assert anchor[1] == f"job-{anchor[0]}"
