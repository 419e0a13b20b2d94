"""A slave's token counts only on the connection it was issued on.

Without a secret the token travels in plaintext: an eavesdropper can read it
and send frames carrying it from a connection of its own.  Replayed there, a
REQUEST (same seq: "my answer was lost") or a GIVEBACK used to requeue jobs
the slave was running - they ran twice.  Here a real master and a real slave
talk through a recording proxy; a rogue DEALER, connected straight to the
master, reads the run, the token, the latest seq and batch ids off the
captured bytes and replays them for the whole run.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import zmq
from conftest import duplicates, free_port, handled, start_logged, tail, tcp_address, text, tm, wait_for, wait_listening
from test_security import RecordingProxy

from taskmaster.wire import protocol


def last(pattern: bytes, data: bytes) -> bytes | None:
    found = re.findall(pattern, data)
    return found[-1] if found else None


@pytest.mark.timeout(150)
def test_a_token_replayed_from_another_connection_is_refused_and_runs_nothing_twice(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.002", "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": "1"}
    n = 3000
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(procs, tm("master", module, f"n={n}", "--address", address, "--no-progress"), mlog, env)
    wait_listening(master, mlog)
    proxy = RecordingProxy(port)
    context = zmq.Context()
    rogue = context.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    replies: list[bytes] = []
    sent = 0
    try:
        slave = start_logged(
            procs, tm("slave", module, "--address", proxy.address, "--concurrency", 4, "--no-progress"), slog, env
        )
        rogue.connect(address)
        deadline = time.monotonic() + 120
        while master.poll() is None and time.monotonic() < deadline:
            wire = proxy.captured()
            slave_id = last(rb'"slave":"([^"]+)"', wire)
            welcome = last(rb'"run":"(\w+)","token":"(\w+)"', wire)
            seq = last(rb'"seq":(\d+)', wire)
            batch = last(rb'"batch":(\d+),"positions"', wire)
            if slave_id and welcome and seq and batch:
                who, (run, token) = slave_id.decode(), (w.decode() for w in welcome)
                # The latest request again (its answer "lost"), and the latest batch "given back".
                rogue.send_multipart(protocol.report(who, run, token, int(seq), 0, [], []))
                rogue.send_multipart(protocol.give_back(who, run, token, [[int(batch), 0]], []))
                sent += 1
            while rogue.poll(0):
                replies.append(rogue.recv_multipart()[0])
            time.sleep(0.005)  # pace the replays: one pair per few ms, for the whole run
        assert master.wait(30) == 0, tail(mlog)
        assert slave.wait(30) == 0, tail(slog)
    finally:
        rogue.close(0)
        context.term()
        proxy.stop()
    assert sent >= 20, f"the rogue found nothing to replay ({sent} replays)"
    jobs = handled(record)
    assert set(jobs) == set(range(n))
    assert duplicates(jobs) == 0, f"{duplicates(jobs)} jobs ran twice after {sent} replays"
    assert replies and set(replies) == {protocol.RESET}, set(replies)
    log = text(mlog)
    assert "token from another connection refused" in log, log[-3000:]


@pytest.mark.timeout(120)
def test_a_slave_that_reconnects_after_a_late_answer_keeps_its_token(procs, tmp_path, recording):
    """The slave's own retry on a new connection (Lazy Pirate) is no replay: no rejoin, no refusal."""
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.005", "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": "1"}
    n = 1500
    address = tcp_address()
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(procs, tm("master", module, f"n={n}", "--address", address, "--no-progress"), mlog, env)
    wait_listening(master, mlog)
    slave_argv = tm("slave", module, "--address", address, "--timeout", 300, "--retries", 40, "--no-progress")
    slave = start_logged(procs, slave_argv, slog, env)
    wait_for(lambda: len(handled(record)) >= 200, 60, what="200 jobs handled")
    os.kill(master.pid, signal.SIGSTOP)  # longer than the slave's --timeout: it retries on a new connection
    try:
        wait_for(lambda: "retrying" in text(slog), 30, what="the slave retrying")
    finally:
        os.kill(master.pid, signal.SIGCONT)
    assert master.wait(60) == 0, tail(mlog)
    assert slave.wait(30) == 0, tail(slog)
    assert set(handled(record)) == set(range(n))
    assert "restarted" not in text(slog) and "say hello again" not in text(slog), tail(slog)
    assert "another connection" not in text(mlog), tail(mlog)
