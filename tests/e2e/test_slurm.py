"""deploy/slurm/ on a real one-node Slurm cluster: munged, slurmctld and slurmd from Debian's packages.

The cluster lives in the test's temporary directory (its own slurm.conf,
munge key and socket, state, spool and ports) and talks over 127.0.0.1 only.
The slave array is submitted before the master, one array task is cancelled
with scancel in the middle of the run, and every job must still be handled,
the master must finish with exit code 0 and the other tasks must end
COMPLETED.  .ci/run installs slurm-wlm and munge when it runs as root with
apt; so does this test.  Where that is impossible, it is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DEPLOY = REPO / "deploy" / "slurm"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
N = 300  # jobs in the run
SLAVES = 3  # array tasks

JOB_MODULE = """
import os, time

def get_jobs(last=0, n="100", **kwargs):
    yield from range(int(last), int(n))

def handle_job(i):
    time.sleep(0.1)
    line = f"{i} {os.environ.get('SLURM_ARRAY_TASK_ID', '-')}\\n"
    fd = os.open(os.environ["TM_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""


def program(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def missing() -> list[str]:
    return [name for name in PROGRAMS if program(name) is None]


def ensure_slurm() -> None:
    """Install slurm-wlm and munge with apt when they are missing and we may; skip (saying why) when we cannot."""
    if not missing():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing())} missing) and cannot be installed here "
            "(needs root and apt-get): apt-get install slurm-wlm munge, as .ci/run does"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"]
    for attempt in ([install], [["apt-get", "update"], install]):
        for argv in attempt:
            subprocess.run(argv, env=env, capture_output=True, timeout=600)
        if not missing():
            return
    pytest.skip(f"apt-get could not install slurm-wlm and munge ({', '.join(missing())} still missing)")


class Cluster:
    """A one-node Slurm cluster in `root`, its daemons started through the `procs` fixture."""

    def __init__(self, procs, root: Path) -> None:
        self.procs = procs
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.jobs: list[str] = []

    def write_config(self) -> None:
        for name in ("state", "spool", "log", "munge"):
            (self.root / name).mkdir(mode=0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        r = self.root
        # No cgroups, no accounting: what a container or a VM without systemd can run.
        # config_overrides: the node offers more CPUs than this machine has,
        # so that a master and three slaves (mostly waiting) run at once.
        self.conf.write_text(
            textwrap.dedent(f"""\
            ClusterName=tmtest
            SlurmctldHost={self.host}(127.0.0.1)
            SlurmctldPort={free_port()}
            SlurmdPort={free_port()}
            SlurmUser=root
            SlurmdUser=root
            AuthType=auth/munge
            AuthInfo=socket={self.munge_socket}
            CredType=cred/munge
            StateSaveLocation={r}/state
            SlurmdSpoolDir={r}/spool
            SlurmctldPidFile={r}/slurmctld.pid
            SlurmdPidFile={r}/slurmd.pid
            SlurmctldLogFile={r}/log/slurmctld.log
            SlurmdLogFile={r}/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            JobCompType=jobcomp/none
            SchedulerType=sched/builtin
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            SlurmdParameters=config_overrides
            ReturnToService=2
            MpiDefault=none
            MailProg=/bin/true
            KillWait=30
            MinJobAge=600
            NodeName=tmnode NodeHostname={self.host} NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
            PartitionName=tm Nodes=tmnode Default=YES MaxTime=INFINITE State=UP
            """)
        )

    def start(self) -> None:
        self.write_config()
        munge = self.root / "munge"
        self.daemon(
            [
                program("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={munge / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            "munged",
        )
        wait_for(self.munge_socket.exists, 30, what="munged's socket")
        self.daemon([program("slurmctld"), "-D"], "slurmctld")
        self.daemon([program("slurmd"), "-D", "-N", "tmnode"], "slurmd")
        wait_for(lambda: self.node_state() == "idle", 90, interval=0.3, what=f"an idle node\n{self.logs()}")

    def daemon(self, argv: list, name: str) -> None:
        with open(self.root / "log" / f"{name}.out", "w") as out:
            self.procs.start([str(a) for a in argv], env=self.env, stdout=out, stderr=out)

    def run(self, *argv: str) -> str:
        result = subprocess.run([program(argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{argv}: {result.stderr}\n{self.logs()}"
        return result.stdout

    def node_state(self) -> str:
        result = subprocess.run(
            [program("sinfo"), "-h", "-n", "tmnode", "-o", "%T"], env=self.env, capture_output=True, text=True
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def submit(self, *argv: object, env: dict[str, str]) -> str:
        out = subprocess.run(
            [program("sbatch"), "--parsable", *map(str, argv)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"sbatch failed: {out.stderr}\n{self.logs()}"
        job = out.stdout.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's fields for one job (or array task, JOBID_TASK)."""
        fields = {}
        for word in self.run("scontrol", "show", "job", "-o", job_id).split():
            key, _, value = word.partition("=")
            fields[key] = value
        return fields

    def queued(self) -> list[str]:
        """Jobs of ours still pending or running."""
        if not self.jobs:
            return []
        out = subprocess.run(
            [program("squeue"), "-h", "-j", ",".join(self.jobs), "-o", "%i"],
            env=self.env,
            capture_output=True,
            text=True,
        )
        return out.stdout.split() if out.returncode == 0 else []

    def stop_jobs(self) -> None:
        if self.jobs and program("scancel"):
            subprocess.run([program("scancel"), *self.jobs], env=self.env, capture_output=True, timeout=60)
            try:
                wait_for(lambda: not self.queued(), 60, interval=0.3, what="cancelled jobs to end")
            except AssertionError:
                pass  # the daemons are killed next anyway

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


@pytest.fixture
def cluster(procs, tmp_path):
    ensure_slurm()
    c = Cluster(procs, tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    try:
        c.start()
        yield c
    finally:
        c.stop_jobs()
        # then the procs fixture kills munged, slurmctld and slurmd by their ids


def records(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # complete lines only
    return [(int(i), task) for i, task in (line.split() for line in lines)]


def test_a_master_and_a_slave_array_with_a_task_cancelled_mid_run(cluster, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    module = work / "slurmjobs.py"
    module.write_text(textwrap.dedent(JOB_MODULE))
    record = work / "handled.txt"
    run_dir = work / "taskmaster-run"
    port = free_port()
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "TM_RECORD": str(record),
        "TM_RUN_DIR": str(run_dir),
        # One node: loopback, so nothing leaves this machine.
        "TM_HOST": "127.0.0.1",
        "TM_BIND": f"tcp://127.0.0.1:{port}",
        "TM_PORT": str(port),
        "TM_POLL_SECONDS": "0.2",
        "TASKMASTER_CONCURRENCY": "2",
        "TASKMASTER_NO_PROGRESS": "1",
    }
    # The slaves first: they wait for the master's address, then for the master.
    slaves = cluster.submit(
        f"--array=0-{SLAVES - 1}", f"--chdir={work}", DEPLOY / "slaves.sbatch", module, "--log-level", "info", env=env
    )
    wait_for(
        lambda: all(cluster.job(f"{slaves}_{t}").get("JobState") == "RUNNING" for t in range(SLAVES)),
        60,
        interval=0.3,
        what="the slave array running",
    )
    master = cluster.submit(f"--chdir={work}", DEPLOY / "master.sbatch", module, f"n={N}", env=env)

    # Cancel task 1 once it is busy with jobs, well before the run is over.
    wait_for(lambda: sum(task == "1" for _, task in records(record)) >= 10, 90, what="task 1 handling jobs")
    assert len(records(record)) < N * 0.7, "the run is nearly over before the cancellation"
    cluster.run("scancel", f"{slaves}_1")

    result_file = run_dir / "result.json"
    wait_for(result_file.exists, 120, interval=0.3, what=f"the master's result file\n{cluster.logs()}")
    wait_for(lambda: not cluster.queued(), 60, interval=0.3, what="every job of the array and the master to end")

    master_log = (work / f"taskmaster-master-{master}.log").read_text()
    result = json.loads(result_file.read_text())
    assert result["exit_code"] == 0, master_log
    assert result["finished"] == N and result["failed"] == 0, master_log
    assert f"{N} finished, 0 failed" in master_log
    master_job = cluster.job(master)
    assert (master_job["JobState"], master_job["ExitCode"]) == ("COMPLETED", "0:0"), master_job

    # Every job was handled, none lost, whichever slave ran it.
    assert sorted({i for i, _ in records(record)}) == list(range(N))
    cancelled = cluster.job(f"{slaves}_1")
    assert cancelled["JobState"] == "CANCELLED", cancelled
    cancelled_log = (work / f"taskmaster-slave-{slaves}_1.log").read_text()
    assert "stopping: finishing the" in cancelled_log, cancelled_log  # SIGTERM reached tm-slave: a clean goodbye
    for task in (0, 2):
        state = cluster.job(f"{slaves}_{task}")
        log = (work / f"taskmaster-slave-{slaves}_{task}.log").read_text()
        assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), f"{state}\n{log}"
        assert any(t == str(task) for _, t in records(record)), f"task {task} handled nothing"
    # Resubmitting the master of a finished run: it says so and exits 0; so does a late slave.
    again = cluster.submit(f"--chdir={work}", DEPLOY / "master.sbatch", module, f"n={N}", env=env)
    late = cluster.submit(f"--chdir={work}", DEPLOY / "slaves.sbatch", module, env=env)
    wait_for(lambda: not cluster.queued(), 60, interval=0.3, what="the second master and the late slave to end")
    assert cluster.job(again)["ExitCode"] == "0:0"
    assert "this run already finished" in (work / f"taskmaster-master-{again}.log").read_text()
    late_log = "".join(p.read_text() for p in work.glob(f"taskmaster-slave-{late}_*.log"))
    assert cluster.job(late)["ExitCode"] == "0:0", late_log
