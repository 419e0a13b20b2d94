"""Child processes of tm-spawn, tm-run and taskmaster.run: started thread-safely, never outliving their parent."""

from __future__ import annotations

import json
import signal
import sys

import pytest
from conftest import descendants, pid_gone, start_logged, tail, tcp_address, text, tm, wait_for, wait_listening


@pytest.mark.timeout(90)
def test_slaves_die_when_tm_spawn_is_sigkilled(procs, tmp_path, recording):
    module, _, env = recording
    env = {**env, "TM_GATE": str(tmp_path / "never"), "TM_GATE_AT": "0"}  # every job waits: the run goes on
    address = tcp_address()
    master_log, spawn_log = tmp_path / "master.log", tmp_path / "spawn.log"
    master = start_logged(procs, tm("master", module, "n=100", "--address", address, "--no-progress"), master_log, env)
    wait_listening(master, master_log)
    spawn = start_logged(
        procs, tm("spawn", module, 2, "--address", address, "--grace", "1", "--no-progress"), spawn_log, env
    )
    wait_for(lambda: text(master_log).count(" joined ") == 2, 30, what="both slaves joined")
    slaves = descendants(spawn.pid)
    assert len(slaves) == 2, slaves
    spawn.send_signal(signal.SIGKILL)  # tm-spawn alone: its slaves must notice by themselves
    spawn.wait(10)
    wait_for(lambda: all(pid_gone(pid) for pid in slaves), 30, what=f"the slaves to exit:\n{tail(spawn_log)}")


# taskmaster.run from a thread, while another thread holds the interpreter's
# import lock (as importlib does, briefly, in every import): Python code run
# around a fork (preexec_fn, at-fork hooks) needs that lock, so run() hung.
THREADED_CALLER = """
import _imp, json, os, sys, threading
import taskmaster, taskmaster.launch.local

forks = []
os.register_at_fork(before=lambda: forks.append("before"), after_in_child=lambda: forks.append("child"))
result = {}

def call_run():
    r = taskmaster.run(sys.argv[1], processes=2, job_args={"n": 300})
    result.update(exit_code=r.exit_code, finished=r.finished)

_imp.acquire_lock()
try:
    caller = threading.Thread(target=call_run)
    caller.start()
    caller.join(60)
    hung = caller.is_alive()
finally:
    _imp.release_lock()
caller.join()
print(json.dumps({"hung": hung, "forks": forks, **result}))
"""


@pytest.mark.timeout(120)
def test_run_from_a_thread_starts_its_processes_without_python_in_the_fork(procs, tmp_path, recording):
    module, record, env = recording
    result = procs.run([sys.executable, "-c", THREADED_CALLER, str(module)], env=env, timeout=100)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"hung": False, "forks": [], "exit_code": 0, "finished": 300}, (outcome, result.stderr[-3000:])
