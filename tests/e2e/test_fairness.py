"""Work goes to whichever slave is free: jobs handed out but not started move.

No timing is asserted.  Slave A's handler blocks - in a way that never yields
to gevent (``--no-monkey-patch``, a real ``time.sleep`` loop), like a C driver -
on a gate file once it has started its first job, while it holds more jobs it
has not started.  Slave B joins later; the gate only opens once B has
finished every job but A's first.  Without give-backs B would run dry while A
sits on its backlog, and the test would time out waiting.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import start_logged, tail, tcp_address, text, wait_exit, wait_for, wait_listening, write_module

from taskmaster.cli.status import ask
from taskmaster.wire.security import keys_for

FAIRNESS_MODULE = """
import os, time

def get_jobs(last=0, n="12", **kwargs):
    for i in range(int(last), int(n)):
        yield i

def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

def handle_job(i):
    name = os.environ["TM_NAME"]
    _append(os.environ["TM_STARTS"], f"{name} {i}\\n")
    gate = os.environ.get("TM_GATE")
    if gate:
        while not os.path.exists(gate):
            time.sleep(0.01)   # unpatched in this slave: blocks the whole process
    _append(os.environ["TM_RECORD"], f"{name} {i}\\n")
"""


def lines(path: Path) -> list[tuple[str, int]]:
    return [(name, int(i)) for name, i in (line.split() for line in text(path).splitlines())]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_dry_slave_gets_the_jobs_a_blocked_slave_has_not_started(procs, tmp_path, transport):
    module = write_module(tmp_path, "fair_jobs", FAIRNESS_MODULE)
    starts, record, gate = tmp_path / "starts", tmp_path / "record", tmp_path / "gate"
    address = f"ipc://{tmp_path}/m.sock" if transport == "ipc" else tcp_address()
    n = 12
    mlog, alog, blog = tmp_path / "master.log", tmp_path / "a.log", tmp_path / "b.log"
    master = start_logged(
        procs,
        [sys.executable, "-m", "taskmaster", "master", str(module), f"n={n}", "--address", address,
         "--state-file", str(tmp_path / "state"), "--no-progress"],
        mlog,
    )
    wait_listening(master, mlog)
    common = {"TM_STARTS": str(starts), "TM_RECORD": str(record)}
    # A holds concurrency (3) + prefetch (at least 1) jobs, starts one, and blocks.
    slave_a = start_logged(
        procs,
        [sys.executable, "-m", "taskmaster", "slave", str(module), "--address", address,
         "--concurrency", "3", "--no-monkey-patch", "--no-progress"],
        alog,
        env={**common, "TM_NAME": "A", "TM_GATE": str(gate)},
    )
    wait_for(lambda: lines(starts), 30, what="slave A starting a job")
    keys = keys_for(None, False, address)  # the default per-user secret, as the commands use
    held = wait_for(lambda: held_by_slaves(ask(address, 1000, keys)), 30, what="A holding jobs")
    assert held >= 2, f"A should hold jobs it has not started, holds {held}"

    slave_b = start_logged(
        procs,
        [sys.executable, "-m", "taskmaster", "slave", str(module), "--address", address,
         "--concurrency", "1", "--no-progress"],
        blog,
        env={**common, "TM_NAME": "B"},
    )
    first_of_a = lines(starts)[0][1]
    others = set(range(n)) - {first_of_a}

    def b_finished_the_rest():
        done = {i for name, i in lines(record) if name == "B"}
        if master.poll() is not None:
            raise AssertionError(f"master exited early:\n{tail(mlog)}")
        return done >= others

    wait_for(b_finished_the_rest, 60, what=f"B finishing every job but A's first ({first_of_a}); "
             f"A started {[i for name, i in lines(starts) if name == 'A']}")
    # The gate is still shut: A has run nothing but its first job.
    assert [i for name, i in lines(starts) if name == "A"] == [first_of_a]
    gate.touch()

    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    assert wait_exit(slave_a, 30, alog) == 0, tail(alog)
    assert wait_exit(slave_b, 30, blog) == 0, tail(blog)
    finished = lines(record)
    assert sorted(i for _, i in finished) == list(range(n)), finished
    assert finished.count(("A", first_of_a)) == 1


def held_by_slaves(status: dict | None) -> int:
    if not status:
        return 0
    return sum(row["in_flight"] for row in status["slaves"])
