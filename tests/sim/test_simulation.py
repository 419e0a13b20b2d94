"""The simulation in CI: a thousand seeds, replay, coverage of the paths, and every regression seed.

Calibration: how many seeds, from seed 0, the simulation needed to find
each defect, with the world and the fixes as of the commit that wrote this
(a change to the world, or to what the code does, moves every seed; the
calibration is redone by putting each fix back):

1. One REQUEST answered twice (a Lazy Pirate retry answered while the first
   copy stayed parked; fixed in ee38d25): found at seed 800, the 801st, with
   --no-size-check --no-job-timeouts (with the size check on, every seed
   stops at that first).  It takes a master that stalls while a request of
   a dry slave is parked, and something that makes jobs available in the
   burst that follows (a resume, a give-back) before that slave's retries.
   Earlier versions of the world were blinder: with stalls one fault in ten
   and a master that ticked after every message (not after each burst, as
   serving.serve does), 5,000 seeds did not find it.
2. --size exceeded (the window stretches WINDOW_STRETCH x for small jobs):
   found at seed 0, the first: its first batches already go past.
3. A resume that skips by position, with a get_jobs whose finished jobs
   vanish: found at seed 8 with --iterators all --no-size-check
   --no-job-timeouts (the 9th seed, the 4th to draw that iterator; 35 of
   the first 100 seeds drawing it fail).  A get_jobs with new jobs inserted
   fails the same way from seed 0 (16 of 95), a reordered one from seed 23
   (the 5th to draw it; 21 of 96); the stable range never fails (0 of 109).
4. The slave-side defects.  A handler that swallows JobTimeout with
   ``except Exception``: found at seed 7 (--no-size-check), the 8th seed,
   the 2nd with a --job-timeout; 52 of the first 300 seeds fail (74 have
   one): the state file counts as finished a job whose handler never
   finished.  Modelled, not run: the real ``WorkerPool._run_with_timeout``
   runs around the handler, but gevent.Timeout's raise at the handler's
   next yield is the simulated handler raising the pool's own JobTimeout
   itself when its simulated duration passed the timeout (the watchdog's
   signal, for a handler that never yields, is not simulated).
   ``pool.forget()`` leaving ``batch.dirty`` set runs for real on every
   RESET, but only costs jobs run twice, which no invariant forbids: not
   found.

Found besides, and fixed here (each with a unit test that failed before):

* a pause answered "settled" while a slave still held a batch not started:
  a GIVEBACK computed before that batch arrived overtook the slave's newer
  REQUEST, and its stale queue won (1b44df5; seeds 673, 733, 973 of the
  first 3,000 with the fix put back; tests/unit/master/test_pause_stale_give_back.py);
* a HELLO arriving late from a connection the slave had given up, taken for
  a new incarnation - new token, jobs taken back, the slave counted settled
  while still holding them (754d0a3; found at seed 18770; with the fix put
  back in today's world, seeds 27641 and 36408 are the first two of 40,000;
  tests/unit/master/test_stale_hello.py);
* a slave counted settled for a pause while it held, not started, a batch
  the master had forgotten because its jobs were resolved elsewhere (handed
  out twice) (b9fdcfa; seed 47737, the only failure in seeds 40,000-60,000;
  tests/unit/master/test_pause_resolved_elsewhere.py).
"""

from __future__ import annotations

import pytest

from . import invariants
from .__main__ import replay_command
from .regressions import REGRESSIONS
from .world import simulate

SEEDS = 1000
# Iterators whose jobs vanish, reorder or appear between a crash and the
# resume: they lost jobs while the resume skipped by position; it skips by
# fingerprint now (taskmaster.identity), so every seed has them.
CHANGING_ITERATORS = True
# Seeds with --job-timeout (one in four), some of whose handlers catch every
# Exception: they counted jobs finished that never were while JobTimeout was
# an Exception those handlers could swallow.
JOB_TIMEOUTS = True


# The seeds in chunks, so that pytest-xdist spreads them over its workers:
# one test of all of them took a worker for half a minute or more.  The
# first chunk stays in the developer's loop (-m "not slow"); the whole
# suite, as CI runs it, simulates all of them.
CHUNKS = 8
assert SEEDS % CHUNKS == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "chunk",
    [k if k == 0 else pytest.param(k, marks=pytest.mark.slow) for k in range(CHUNKS)],
    ids=lambda k: f"seeds-{k * SEEDS // CHUNKS}-{(k + 1) * SEEDS // CHUNKS - 1}",
)
def test_a_thousand_seeds_keep_every_promise(chunk):
    failed = []
    for seed in range(chunk * SEEDS // CHUNKS, (chunk + 1) * SEEDS // CHUNKS):
        result = simulate(seed, CHANGING_ITERATORS, invariants.SIZE_IS_A_BOUND, job_timeouts=JOB_TIMEOUTS)
        if result.error:
            command = replay_command(seed, CHANGING_ITERATORS, invariants.SIZE_IS_A_BOUND, JOB_TIMEOUTS)
            failed.append(f"{command}  # {result.error}")
    assert not failed, f"{len(failed)} of {SEEDS // CHUNKS} seeds failed:\n" + "\n".join(failed[:20])


def test_a_seed_replays_exactly():
    for seed in (3, 366):
        first, again = simulate(seed, True, False, verbose=True), simulate(seed, True, False, verbose=True)
        assert first.trace == again.trace and first.digest == again.digest


@pytest.mark.slow  # a check of the seeds, not of the code: it changes only when the simulation does
@pytest.mark.timeout(300)
def test_the_seeds_go_through_every_path_the_promises_depend_on():
    wanted = {
        "reset, same run",  # a RESET in the same run: a slave's token went stale, it says hello again
        "reset, new run",  # the master crashed or stopped, and a new one resumed
        "master resumed",
        "parked at the end",  # requests waiting when the run ended
        "recall",
        "jobs given back",
        "lease lost",
        "failures reported",
        "ended halted",  # --max-failures
        "ended interrupted",  # tm-ctl stop
    }
    seen: set[str] = set()
    # Within the first 300 seeds; stop at the first seed that completes the
    # set (seed 82 today) rather than simulate seeds that can add nothing.
    for seed in range(300):
        seen.update(simulate(seed, CHANGING_ITERATORS, False, job_timeouts=JOB_TIMEOUTS).seen)
        if wanted <= seen:
            break
    assert wanted <= seen, f"never exercised: {sorted(wanted - seen)}"


@pytest.mark.parametrize("case", REGRESSIONS, ids=[f"{r.seed}-{r.what}" for r in REGRESSIONS])
def test_regression_seed(case, request):
    if case.open:
        request.applymarker(pytest.mark.xfail(reason=f"open: {case.what}", strict=True))
    result = simulate(case.seed, case.changing, case.size_check, job_timeouts=case.job_timeouts)
    command = replay_command(case.seed, case.changing, case.size_check, case.job_timeouts)
    assert result.error is None, f"{command}: {result.error}"
