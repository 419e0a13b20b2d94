"""Beyond one machine: a master on host A, slaves on hosts B and C, over TCP.

The hosts are network namespaces on a private bridge (``tests/netns.py``):
each has its own address on 10.201.0.0/24 and nothing else, so the master
binds a real non-loopback interface and the slaves reach it through veth
pairs and a bridge, with CURVE (``--secret-file``) on every command.  The
namespaces share the filesystem, so every handler appends
``position host pid time`` to one record file in tmp_path: which host
handled which job, and when.

* a run split across two slave hosts;
* host B cut off mid-run (its cable unplugged at the bridge): after
  ``--lease-timeout`` its jobs go to C; B comes back, rejoins, the run ends;
* the master's host cut off for less than the slaves' patience
  (``--timeout`` x ``--retries``): the slaves wait, the run ends;
* (on loopback, no namespaces) a master answering later than the slave's
  ``--timeout``: what a cut does to the request in flight at that moment.

A master that stops making progress while jobs are leased to slaves that
are alive is reported as stuck after STALL seconds (polling tm-status),
rather than after the test's whole deadline.

The namespace tests are skipped, with the reason, where network namespaces
cannot be created (not root, no ``ip``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, tm, wait_for, write_module

pytestmark = pytest.mark.slow

PORT = 3050
PATIENCE = ("--timeout", "500", "--retries", "20")  # slaves wait up to 10 s for the master
WAITING = re.compile(r"WARNING slave (\S+): master at .* \(try \d+ of ")  # a slave up, waiting for its master
STALL = 8.0  # seconds without a job finished while jobs are in flight: the master is stuck

HOST_MODULE = '''
import os, time

RECORD = os.environ["TM_RECORD"]
HOST = os.environ["TM_HOST"]


def get_jobs(last=0, n="1000", **kwargs):
    for i in range(int(last), int(n)):
        yield i


def count_jobs(n="1000", **kwargs):
    return int(n)


def handle_job(i):
    time.sleep(float(os.environ.get("TM_DELAY", "0")))
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i} {HOST} {os.getpid()} {time.time():.3f}\\n".encode())
    finally:
        os.close(fd)
'''


@dataclass(frozen=True)
class Handling:
    job: int
    host: str
    pid: int
    at: float  # time.time()


class Cluster:
    """A master on A and slave hosts, their logs, the secret and the record."""

    def __init__(self, procs, network, tmp_path: Path, n: int, delay: float, port: int = PORT) -> None:
        self.procs = procs
        self.net = network
        self.dir = tmp_path
        self.n = n
        self.module = write_module(tmp_path, "hostjobs", HOST_MODULE)
        self.record = tmp_path / "handled.txt"
        self.secret = tmp_path / "secret"
        self.state = tmp_path / "run.state"
        self.address = f"tcp://{network.address('A')}:{port}"
        self.delay = delay
        self.logs: dict[int, Path] = {}
        made = procs.run(tm("master", "--new-secret", self.secret), timeout=30)
        assert made.returncode == 0, made.stderr

    def start(self, host: str, argv: list[str], name: str) -> subprocess.Popen:
        log = self.dir / f"{len(self.logs):02d}-{name}-{host}.log"
        env = {"TM_RECORD": str(self.record), "TM_HOST": host, "TM_DELAY": str(self.delay)}
        with open(log, "w") as f:
            proc = self.procs.start(self.net.wrap(host, argv), env=env, stdout=f, stderr=f)
        self.logs[proc.pid] = log
        return proc

    def master(self, *extra: object) -> subprocess.Popen:
        argv = tm("master", self.module, f"n={self.n}", "--address", self.address, "--secret-file", self.secret,
                  "--state-file", self.state, "--no-progress", *extra)
        proc = self.start("A", argv, "master")
        wait_for(lambda: "listening on" in self.log(proc) or proc.poll() is not None, 30, what="the master to listen")
        assert proc.poll() is None, self.log(proc)
        return proc

    def spawn(self, host: str, count: int, *extra: object) -> subprocess.Popen:
        argv = tm("spawn", self.module, count, "--address", self.address, "--secret-file", self.secret,
                  "--no-progress", *PATIENCE, *extra)
        return self.start(host, argv, "spawn")

    def spawn_waiting(self, host: str, count: int, *extra: object) -> subprocess.Popen:
        """tm-spawn on `host`, returned once its `count` slaves are up and waiting for the master.

        Slaves started before their master is the usual order on many hosts,
        and it means none of them arrives after a short run has ended.
        """
        proc = self.spawn(host, count, *extra)
        wait_for(lambda: len(set(WAITING.findall(self.log(proc)))) == count or proc.poll() is not None, 60,
                 interval=0.1, what=f"{count} slaves on {host} waiting for the master")
        assert proc.poll() is None, self.log(proc)
        return proc

    def status(self, host: str) -> dict | None:
        """tm-status --json, asked from `host` over the network; None if the master did not answer."""
        argv = tm("status", "--address", self.address, "--secret-file", self.secret, "--timeout", 2000, "--json")
        result = self.procs.run(self.net.wrap(host, argv), timeout=30)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def log(self, proc: subprocess.Popen) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def wait(self, proc: subprocess.Popen, timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{' '.join(map(str, proc.args[4:8]))} still running after {timeout}s:\n{self.log(proc)[-4000:]}"
            ) from None

    def finish(self, master: subprocess.Popen, timeout: float) -> int:
        """The master's exit code; fail early, saying so, if it is stuck.

        Stuck: no job finished for STALL seconds although jobs are in flight,
        nothing is left to hand out and every slave holding them is alive
        (heard from within the last 3 s) - jobs leased to slaves that do not
        have them, which only a dead slave's lease would ever give back.
        """
        deadline = time.monotonic() + timeout
        finished, since = -1, time.monotonic()
        while True:
            try:
                return master.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"the master still runs after {timeout}s:\n{self.log(master)[-4000:]}")
            snap = self.status("A")
            if snap is None:
                continue
            if snap["finished"] != finished:
                finished, since = snap["finished"], now
                continue
            holders = [s for s in snap["slaves"] if s["in_flight"]]
            if (now - since > STALL and snap["in_flight"] and not snap["buffered"]
                    and all(s["state"] == "working" and s["last_seen"] < 3 for s in holders)):
                rows = ", ".join(f"{s['id']}: {s['in_flight']} (last seen {s['last_seen']}s ago)" for s in holders)
                raise AssertionError(
                    f"the master is stuck at {finished} of {self.n} finished: {snap['in_flight']} jobs leased to "
                    f"live slaves that never acknowledge them, nothing finished for {STALL:.0f}s [{rows}]\n"
                    f"{self.log(master)[-3000:]}"
                )

    def handlings(self) -> list[Handling]:
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            job, host, pid, at = line.split()
            out.append(Handling(int(job), host, int(pid), float(at)))
        return out

    def count(self) -> int:
        return len(self.handlings())

    def assert_every_job_handled(self) -> list[Handling]:
        records = self.handlings()
        jobs = {r.job for r in records}
        missing = sorted(set(range(self.n)) - jobs)
        assert not missing, f"{len(missing)} jobs never handled, e.g. {missing[:20]}"
        assert jobs <= set(range(self.n)), sorted(jobs - set(range(self.n)))[:20]
        return records

    def summary(self, master: subprocess.Popen) -> str:
        lines = [ln for ln in self.log(master).splitlines() if ln.startswith("tm-master: ") and "finished" in ln]
        assert lines, f"no summary from the master:\n{self.log(master)[-4000:]}"
        return lines[-1]


class Loopback:
    """One host, no namespaces: every "host" is this machine's loopback."""

    def address(self, host: str) -> str:
        return "127.0.0.1"

    def wrap(self, host: str, argv: list) -> list[str]:
        return list(map(str, argv))


@pytest.fixture
def cluster(procs, network, tmp_path):
    def make(n: int, delay: float) -> Cluster:
        return Cluster(procs, network, tmp_path, n, delay)

    return make


def by_host(records: list[Handling]) -> Counter:
    return Counter(r.host for r in records)


@pytest.mark.timeout(60)
def test_master_on_one_host_slaves_on_two_others(cluster, network):
    """Master binds A's own address with a secret; 2 slaves on B and 2 on C share the run."""
    c = cluster(n=3000, delay=0.02)
    spawns = [c.spawn_waiting("B", 2, "--concurrency", 5), c.spawn_waiting("C", 2, "--concurrency", 5)]
    master = c.master()
    assert network.address("A") in c.log(master)

    # Watched from a third host over the network, as an operator would.
    snapshot = wait_for(
        lambda: (s := c.status("C")) and len(s["slaves"]) == 4 and s, 30, what="tm-status showing 4 slaves"
    )
    assert snapshot["state"] in ("running", "draining"), snapshot
    assert snapshot["total"] == c.n

    assert c.finish(master, 45) == 0, c.log(master)
    for spawn in spawns:
        assert c.wait(spawn, 15) == 0, c.log(spawn)
    records = c.assert_every_job_handled()
    hosts = by_host(records)
    print(f"jobs per host: {dict(hosts)}")
    assert set(hosts) == {"B", "C"}, hosts
    assert min(hosts.values()) >= c.n // 10, f"one host did almost nothing: {dict(hosts)}"
    assert len({r.pid for r in records}) == 4, "every slave process handled jobs"
    assert len(records) == c.n, f"{len(records) - c.n} jobs handled twice in a run without failures"
    assert f"{c.n} finished, 0 failed" in c.summary(master)


@pytest.mark.timeout(90)
def test_slave_host_cut_off_mid_run_loses_its_jobs_to_the_other_then_rejoins(cluster, network):
    """B's cable is pulled for 5 s, lease 2 s: C takes over B's jobs; B comes back and rejoins."""
    c = cluster(n=6000, delay=0.02)
    spawns = {host: c.spawn_waiting(host, 2, "--concurrency", 5) for host in ("B", "C")}
    master = c.master("--lease-timeout", 2)
    wait_for(lambda: by_host(c.handlings())["B"] >= 300 and by_host(c.handlings())["C"] >= 300, 30,
             what="both hosts at work")

    network.link_down("B")
    cut = time.time()
    try:
        lost = wait_for(lambda: c.log(master).count("silent for") >= 2 and c.log(master), 20,
                        what="the master to take back the jobs of B's two slaves")
        assert time.time() - cut >= 1.5, "the lease ran out before --lease-timeout"
        snapshot = c.status("C")  # the master still answers the hosts it can reach
        assert snapshot is not None
        assert sum(1 for s in snapshot["slaves"] if s["state"] == "lost") == 2, snapshot["slaves"]
        time.sleep(max(0.0, cut + 5 - time.time()))
    finally:
        network.link_up("B")
    back = time.time()

    assert c.finish(master, 60) == 0, c.log(master)
    log = c.log(master)
    records = c.assert_every_job_handled()
    taken = [int(x.split(" of its jobs")[0].rsplit(":", 1)[1]) for x in lost.splitlines() if "silent for" in x]
    assert sum(taken) > 0, lost

    # B's jobs went to C: jobs B handled before its lease ran out but could not
    # acknowledge (cut off), handled again by C after the cut.
    b_before = {r.job for r in records if r.host == "B" and r.at < cut + 2}
    c_after = {r.job for r in records if r.host == "C" and r.at > cut}
    resent = b_before & c_after
    print(f"taken back {taken}, handled by B then again by C: {len(resent)}, per host {dict(by_host(records))}")
    assert resent, "no job of B's was handled again on C"

    # B rejoined (same run: its late acknowledgements are accepted) ...
    assert log.count("is back") >= 1, log[-4000:]
    b_after = [r for r in records if r.host == "B" and r.at > back]
    code_b = c.wait(spawns["B"], 20)
    if b_after:
        assert code_b == 0, c.log(spawns["B"])
    else:  # ... or, had the run ended first, gave up cleanly with a message.
        assert code_b == 1 and "lost the master" in c.log(spawns["B"]), c.log(spawns["B"])
    assert c.wait(spawns["C"], 20) == 0, c.log(spawns["C"])
    assert "Traceback" not in c.log(spawns["B"]) + c.log(spawns["C"]) + log
    # No double counting: the master counts every job once, whoever acknowledged it.
    assert f"{c.n} finished, 0 failed" in c.summary(master)
    assert json.loads(c.state.read_text())["finished"] == c.n


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lease", [10, 2], ids=["lease-outlasts-cut", "lease-expires-during-cut"])
def test_master_host_cut_off_shorter_than_the_slaves_patience(cluster, network, lease):
    """A's cable is pulled for 3 s; slaves wait up to 10 s (500 ms x 20): the run completes.

    With a lease longer than the cut the same master process keeps every
    slave and accepts their pending acknowledgements (same run); with a
    shorter one it takes their jobs back, then takes the slaves back in.
    """
    c = cluster(n=5000, delay=0.02)
    spawns = [c.spawn_waiting(host, 2, "--concurrency", 5) for host in ("B", "C")]
    master = c.master("--lease-timeout", lease)
    wait_for(lambda: c.count() >= 1000, 30, what="1000 jobs handled")

    network.link_down("A")
    cut = time.time()
    try:
        time.sleep(3)
    finally:
        network.link_up("A")

    assert c.finish(master, 60) == 0, c.log(master)
    for spawn in spawns:
        assert c.wait(spawn, 20) == 0, c.log(spawn)
    log = c.log(master)
    records = c.assert_every_job_handled()
    during = [r for r in records if cut + 0.5 < r.at < cut + 3]
    repeats = len(records) - len({r.job for r in records})
    print(f"lease {lease}s: {len(during)} handled while A was cut off, {repeats} handled twice, "
          f"summary: {c.summary(master)}")
    assert f"{c.n} finished, 0 failed" in c.summary(master)
    assert "restarted" not in "".join(c.log(s) for s in spawns), "the slaves took the partition for a restart"
    if lease > 3:
        assert "silent for" not in log, log[-4000:]
        assert repeats == 0, f"{repeats} jobs ran twice though no lease ran out"
    else:
        assert log.count("silent for") == 4, log[-4000:]


@pytest.mark.timeout(60)
def test_answer_later_than_the_slave_timeout_loses_no_jobs(procs, tmp_path):
    """The master answers a request after the slave's --timeout: the run still completes.

    No namespaces needed: the master is frozen (SIGSTOP) for 1 s, longer than
    the slave's 300 ms --timeout, as a congested link or an overloaded master
    host would delay it.  The slave gives up on that request and sends it
    again on a new connection (Lazy Pirate).  When the master runs again it
    answers the first copy - to a connection that is gone - and the second.
    Whatever it handed out in the lost answer must come back to the run.
    """
    c = Cluster(procs, Loopback(), tmp_path, n=2000, delay=0.01, port=free_port())
    slave = c.start("B", tm("slave", c.module, "--address", c.address, "--secret-file", c.secret,
                            "--timeout", 300, "--retries", 40, "--concurrency", 10, "--no-progress"), "slave")
    master = c.master()
    wait_for(lambda: c.count() >= 300, 30, what="300 jobs handled")
    os.kill(master.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)
    finally:
        os.kill(master.pid, signal.SIGCONT)
    assert c.finish(master, 40) == 0, c.log(master)
    assert c.wait(slave, 15) == 0, c.log(slave)
    c.assert_every_job_handled()
    assert f"{c.n} finished, 0 failed" in c.summary(master)
