"""A stopping master does not play request ping-pong with its slaves for the whole --grace.

While the master waits out --grace for the jobs in flight it hands nothing
out; it used to answer every request at once with NO_JOBS, and a slave with
room asked again at once: thousands of requests a second, for nothing.  Each
slave logs (at debug) how many requests it sent in all; here the run is
stopped with a job that never finishes, so the whole --grace passes.
"""

from __future__ import annotations

import re
import signal

import pytest
from conftest import handled, start_logged, tail, tcp_address, text, tm, wait_exit, wait_for, wait_listening

GRACE = 6  # seconds the master waits for the job in flight, all of it


@pytest.mark.timeout(120)
def test_slaves_send_few_requests_while_the_master_waits_out_its_grace(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_GATE": str(tmp_path / "never"), "TM_GATE_AT": "2"}  # job 2 never finishes
    address = tcp_address()
    mlog = tmp_path / "master.log"
    master = start_logged(
        procs, tm("master", module, "n=3", "--address", address, "--grace", GRACE, "--no-progress"), mlog, env
    )
    wait_listening(master, mlog)
    slave_logs = [tmp_path / f"slave{i}.log" for i in range(2)]
    slaves = [
        start_logged(
            procs, tm("slave", module, "--address", address, "--no-progress", "--log-level", "debug"), log, env
        )
        for log in slave_logs
    ]
    wait_for(lambda: sorted(handled(record)) == [0, 1], 30, what="jobs 0 and 1 handled")
    wait_for(lambda: text(mlog).count(" joined ") == 2, 30, what="both slaves joined")
    master.send_signal(signal.SIGTERM)
    assert wait_exit(master, GRACE + 30, mlog) == 128 + signal.SIGTERM, tail(mlog)
    assert "interrupted" in text(mlog), tail(mlog)
    counts = []
    for slave, log in zip(slaves, slave_logs, strict=True):
        wait_exit(slave, 30, log)
        match = re.search(r", (\d+) requests", text(log))
        assert match, tail(log)
        counts.append(int(match.group(1)))
    # About one request per parked second and slave, plus the few before the stop.
    assert max(counts) <= 4 * GRACE + 20, f"requests per slave: {counts}"
