"""An explicit --size is a hard bound: the master never holds more jobs, whatever they weigh.

People set it low on purpose: to limit what get_jobs reads ahead from a live
table, and what a crash makes them run again.  Jobs here pickle small, which
is when a master choosing its own window stretches it; with --size it must not.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import free_port, tcp_address, tm, wait_for, write_module

SIZE = 300
GAUGES = ("taskmaster_jobs_buffered", "taskmaster_jobs_in_flight", "taskmaster_buffer_size")

# get_jobs counts what it yields; handle_job counts what ran.  Before each
# yield, get_jobs checks that it is not more than SIZE + 1 (the job being
# pulled) ahead of the jobs handled, which can only be more than the master
# has seen resolved - so a violation here is a violation in the master.
MODULE = """
import os

PULLED = os.environ["TM_PULLED"]
HANDLED = os.environ["TM_HANDLED"]
SIZE = int(os.environ["TM_SIZE"])

def _count(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0

def get_jobs(last=0, n="6000", **kwargs):
    for i in range(int(last), int(n)):
        ahead = i + 1 - _count(HANDLED)
        with open(PULLED, "a") as f:
            f.write(f"{ahead}\\n")
        yield i

def handle_job(i):
    fd = os.open(HANDLED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.close(fd)
"""


def status(procs, address: str) -> dict | None:
    result = procs.run(tm("status", "--address", address, "--json"), timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.mark.timeout(180)
def test_an_explicit_size_bounds_buffered_plus_in_flight_and_the_read_ahead(procs, tmp_path):
    module = write_module(tmp_path, "bounded", MODULE)
    pulled, handled = tmp_path / "pulled.txt", tmp_path / "handled.txt"
    env = {"TM_PULLED": str(pulled), "TM_HANDLED": str(handled), "TM_SIZE": str(SIZE)}
    address, metrics_port = tcp_address(), free_port()
    master = procs.start(
        tm("master", module, "--address", address, "--size", SIZE, "--no-progress",
           "--state-file", tmp_path / "run.state", "--metrics-address", f"127.0.0.1:{metrics_port}"),
        env=env,
    )
    # No slave yet: the master fills its window, and no further.
    snap = wait_for(lambda: (s := status(procs, address)) and s["buffered"] >= SIZE // 2 and s, 30, what="jobs")
    assert snap["size"] == SIZE and snap["buffered"] + snap["in_flight"] <= SIZE, snap
    assert len(pulled.read_text().split()) <= SIZE + 1

    slaves = [procs.start(tm("slave", module, "--address", address, "--no-progress"), env=env) for _ in range(2)]
    seen = []
    while master.poll() is None:
        snap = status(procs, address)
        if snap is not None:
            seen.append((snap["buffered"], snap["in_flight"], snap["size"]))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
                    text = page.read().decode()
            except urllib.error.URLError:
                # The master closes /metrics as its run ends, a moment before it exits.
                try:
                    master.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pytest.fail("/metrics stopped answering while the run went on")
                break
            gauges = {
                line.split()[0]: float(line.split()[1])
                for line in text.splitlines()
                if line.split(" ")[0] in GAUGES
            }
            seen.append((gauges["taskmaster_jobs_buffered"], gauges["taskmaster_jobs_in_flight"],
                         gauges["taskmaster_buffer_size"]))
    out, err = master.communicate(timeout=30)
    assert master.returncode == 0, err[-3000:]
    for slave in slaves:
        slave.communicate(timeout=30)
    assert len(handled.read_bytes()) >= 6000
    assert seen, "tm-status never answered while the run went on"
    over = [s for s in seen if s[0] + s[1] > SIZE or s[2] != SIZE]
    assert not over, f"observations over --size {SIZE}: {over[:5]} of {len(seen)}"
    ahead = max(int(x) for x in pulled.read_text().split())
    assert ahead <= SIZE + 1, f"get_jobs was read {ahead} jobs ahead of the jobs handled"


def test_without_size_status_says_the_master_chose_the_window(procs, tmp_path):
    module = write_module(tmp_path, "bounded", MODULE)
    env = {"TM_PULLED": str(tmp_path / "p"), "TM_HANDLED": str(tmp_path / "h"), "TM_SIZE": "0"}
    address = tcp_address()
    procs.start(tm("master", module, "--address", address, "--no-progress", "--state-file", tmp_path / "s"), env=env)
    wait_for(lambda: status(procs, address), 30, what="tm-status to answer")
    text = procs.run(tm("status", "--address", address), timeout=30)
    assert text.returncode == 0, text.stderr
    assert "window chosen by the master: no --size" in text.stdout, text.stdout
