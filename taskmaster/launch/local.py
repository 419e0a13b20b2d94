"""Running a whole job from Python: ``taskmaster.run(target, processes=4, ...)``.

The same function backs ``tm-run``: a master and N slave processes on this
host, talking over a private ipc:// socket in a fresh directory only the user
can read (mode 0700), removed at the end, with a secret of the run's own
kept there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskmaster import fileio
from taskmaster import options as opts
from taskmaster.errors import UsageError
from taskmaster.launch import fork as forked
from taskmaster.launch import target as targets
from taskmaster.launch.supervisor import Child, Supervisor, exit_code
from taskmaster.wire import secretfile

log = logging.getLogger("taskmaster.run")

MASTER_FLAGS = opts.MASTER_OPTIONS + opts.SHARED_OPTIONS + opts.COMMON_OPTIONS
SLAVE_FLAGS = opts.SLAVE_OPTIONS + opts.SHARED_OPTIONS + opts.COMMON_OPTIONS
# What run() takes as options besides the tables' (as keyword arguments).
RUN_ONLY_OPTIONS = {"address": None, "get_jobs_callback": "get_jobs", "handle_job_callback": "handle_job"}
OPTION_NAMES = frozenset({opt.dest for opt in MASTER_FLAGS + SLAVE_FLAGS} | set(RUN_ONLY_OPTIONS))
# After the master ends (it told every slave that joined to quit), how long
# slaves get to leave by themselves; one still there then is still starting,
# too late for a run that is over, and is stopped.
SLAVE_EXIT_SECONDS = 0.05


@dataclass
class RunResult:
    """How a run ended: ``exit_code`` as tm-run's, jobs finished and failed, seconds taken.

    ``error`` is the master's error, or else what went wrong around it (a
    child killed, the result file not written), also listed in ``problems``.
    """

    exit_code: int
    finished: int = 0
    failed: int = 0
    duration: float = 0.0
    summary: str = ""
    error: str = ""
    # What went wrong outside the master, which it could not say itself (a
    # child killed, the result file not written): tm-run prints these.
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run(target: str, processes: int = 4, *, job_args: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
    """Run `target`'s jobs with a master and `processes` local slaves; wait for the end.

    `target` is a path/to/file.py or package.module defining get_jobs and
    handle_job.  `job_args` go to get_jobs, as strings, like key=value on the
    command line - whatever their names, also ``size`` or ``timeout``.  Every
    other keyword argument is an option, named like tm-run's flag
    (``size=10000``, ``state_file=...``, ``reset=True``, ``concurrency``,
    ``lease_timeout``, ``job_timeout``, ``rate``, ``max_failures``,
    ``address``, ``get_jobs_callback``, ...); an unknown name is a TypeError,
    never a job argument.  So a job argument can never turn into an option,
    nor a misspelt option into a job argument.

    The target is checked in a child process: the caller's sys.path and
    sys.modules are left as they are.
    """
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"run() got unknown option(s) {', '.join(unknown)}: options are tm-run's flags with _ for - "
            f"(size, state_file, concurrency, ...); arguments for get_jobs go in job_args={{...}}"
        )
    if not isinstance(processes, int) or processes < 1:
        raise UsageError(f"processes must be a positive integer, not {processes!r}")
    if job_args is not None and not isinstance(job_args, Mapping):
        raise TypeError(f"job_args must map get_jobs argument names to values, not {job_args!r}")
    job_kwargs = {str(key): str(value) for key, value in (job_args or {}).items()}
    # TASKMASTER_<OPTION> variables count as for the commands; keyword arguments win.
    values = {**RUN_ONLY_OPTIONS, "no_progress": True, **opts.environment_values(option_parser()), **options}
    return launch(
        target,
        processes,
        job_kwargs,
        values,
        values["get_jobs_callback"],
        values["handle_job_callback"],
        values["address"],
        check_targets_here=False,
        keyword_options=True,
    )


def _how_it_ended(child: Child) -> str:
    """A child's end as a person says it: "was killed by SIGKILL", "exited with code 1"."""
    code = child.returncode or 0
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _watch_children(supervisor: Supervisor, master: Child, slaves: list[Child]) -> list[str]:
    """Wait for the master to end; what went wrong with the children meanwhile, for tm-run to say.

    A slave that dies (a crash, kill -9) is logged at once: the master gives
    its jobs to the others once its lease runs out.  When every slave died,
    nothing would finish the jobs: the master is stopped.  A master killed by
    a signal could not say so itself.  Children ending because the user
    stopped tm-run (the signals it passed on) are no news.
    """
    problems: list[str] = []
    dead: set[int] = set()
    gave_up = False
    while not supervisor.wait([master], timeout=0.5):
        if supervisor.signals:
            continue
        died = [slave for slave in slaves if slave.pid not in dead and slave.poll() not in (None, 0)]
        dead.update(slave.pid for slave in died)
        if len(dead) < len(slaves):
            for slave in died:
                log.warning(
                    "slave pid %d %s; its jobs go to the other slaves once its lease runs out",
                    slave.pid,
                    _how_it_ended(slave),
                )
        elif slaves and not gave_up:
            gave_up = True
            ends = ", ".join(f"pid {slave.pid} {_how_it_ended(slave)}" for slave in slaves)
            problems.append(f"every slave ended before the run did ({ends}): stopped the master")
            supervisor.stop([master], timeout=30)
    if (master.returncode or 0) < 0 and not supervisor.signals and not gave_up:
        problems.append(
            f"the master (pid {master.pid}) {_how_it_ended(master)} before the run ended: stopped the slaves; "
            "run the same command to resume"
        )
    return problems


def _copy_result(raw: bytes, path: str, result: RunResult) -> None:
    """The master's outcome, to the user's --result-file; a problem (exit code 1) if it cannot be written."""
    try:
        fileio.write_atomically(path, raw)
    except OSError as exc:
        result.problems.append(f"cannot write the result file {path}: {exc.strerror or exc}")
        result.exit_code = result.exit_code or 1


def option_parser() -> argparse.ArgumentParser:
    """A parser with every master and slave option: which TASKMASTER_ variables set one."""
    parser = argparse.ArgumentParser(prog="taskmaster.run", add_help=False)
    opts.add_address(parser, default=None)
    opts.add_options(parser, opts.MASTER_OPTIONS + opts.SLAVE_OPTIONS + opts.SHARED_OPTIONS)
    opts.add_options(parser, opts.COMMON_OPTIONS)
    return parser


def launch(
    script: str,
    processes: int,
    job_kwargs: dict[str, str],
    options: dict[str, Any],
    get_jobs_callback: str = "get_jobs",
    handle_job_callback: str = "handle_job",
    address: str | None = None,
    forward_signals: bool = True,
    check_targets_here: bool = True,
    fork: forked.Commands | None = None,
    keyword_options: bool = False,
) -> RunResult:
    """Start the master and the slaves, wait for the master, clean up; the result.

    Bad targets are one message here, not one per process: checked in this
    process (tm-run, whose process is its own), or with `check_targets_here`
    False in a child (taskmaster.run, which must leave its caller alone).
    Given `fork`, the commands' mains (tm-run: one thread, a process of its
    own), the master and the slaves are forked from this process rather than
    started afresh (``taskmaster.launch.fork``), and the targets are checked while
    they start.  `keyword_options`: the user gave the options as
    taskmaster.run's keyword arguments, not as tm-run's flags (for messages).
    """

    def option(name: str) -> str:
        return f"{name}=NAME" if keyword_options else f"--{name.replace('_', '-')} NAME"

    if script.rpartition(":")[1]:
        # One target, two functions: a single name cannot say which it means.
        module_part = script.rpartition(":")[0]
        runner = "taskmaster.run" if keyword_options else "tm-run"
        raise UsageError(
            f"{script!r} names a function, but {runner} runs two of one module (get_jobs and handle_job): give "
            f"{module_part} alone, and other names with {option('get_jobs_callback')} and "
            f"{option('handle_job_callback')}"
        )
    module, _ = targets.split(script, "get_jobs")
    get_jobs = f"{module}:{get_jobs_callback}"
    handle_job = f"{module}:{handle_job_callback}"
    checks = [
        (get_jobs, "get_jobs", option("get_jobs_callback")),
        (handle_job, "handle_job", option("handle_job_callback")),
    ]

    def check_targets() -> None:
        for check in checks:
            targets.load(*check)

    if fork:
        forked.preload(monkey_patch=not options.get("no_monkey_patch"))
    elif check_targets_here:
        check_targets()
    else:
        targets.check_in_child(checks)
    kwargs_argv = [f"{key}={value}" for key, value in job_kwargs.items()]
    targets.parse_kwargs(kwargs_argv)

    # The master writes its outcome where we read it; the user's --result-file
    # gets a copy once it is there, written as tm-master writes it.
    user_result_file = options.get("result_file")
    if user_result_file:
        user_result_file = os.path.abspath(user_result_file)
        fileio.check_writable(user_result_file, "result file", "result_file=" if keyword_options else "--result-file")
    private_dir = tempfile.mkdtemp(prefix="taskmaster-")  # mode 0700: ours alone
    if address is None:
        address = f"ipc://{os.path.join(private_dir, 'master.sock')}"
        if not options.get("secret_file") and not options.get("insecure"):
            # A secret of this run's own, in the private directory: nothing
            # outside this run (not even the user's other commands) can join.
            # With an --address given, the user's default secret is used
            # instead, so that their tm-status and tm-ctl can reach the master.
            options = {**options, "secret_file": os.path.join(private_dir, "secret")}
            secretfile.new_secret_file(options["secret_file"])
    result_file = os.path.join(private_dir, "result.json")
    master_args = [get_jobs, *kwargs_argv, "--address", address]
    master_args += opts.flags({**options, "result_file": None}, MASTER_FLAGS) + ["--result-file", result_file]
    if "--linger" not in master_args:
        master_args += ["--linger", "0"]  # we supervise our slaves: no need to wait for late ones
    slave_args = [handle_job, "--address", address, "--no-progress", "--beside-master"]
    slave_args += [f for f in opts.flags(options, SLAVE_FLAGS) if f != "--no-progress"]

    supervisor = Supervisor()
    # Every setting is on the children's command lines: none from variables.
    child_env = opts.child_environment(option_parser())
    restore = None
    if forward_signals and threading.current_thread() is threading.main_thread():
        restore = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        supervisor.forward_signals()
    started = time.monotonic()
    try:
        # Slaves start with the master, not after it: they take as long to
        # start as it does, and they wait for it meanwhile (--beside-master).  A
        # master that refuses to start is stopped with them before they have
        # anything to say, so its message is the only one.
        if fork:
            children = [(fork.master, master_args, "tm-master")] + [(fork.slave, slave_args, "tm-slave")] * processes
            master, *slaves = forked.fork_children(supervisor, children, child_env, check_targets)
        else:
            master = supervisor.start(["-m", "taskmaster.cli.master", *master_args], child_env)
            slave_argv = ["-m", "taskmaster.cli.slave", *slave_args]
            slaves = [supervisor.start(slave_argv, child_env) for _ in range(processes)]
        problems = _watch_children(supervisor, master, slaves)
        result = RunResult(exit_code(master.returncode), duration=time.monotonic() - started, problems=problems)
        served = False
        try:
            with open(result_file, "rb") as f:
                raw = f.read()
            data = json.loads(raw)
            result.finished, result.failed = data["finished"], data["failed"]
            result.summary, result.error = data["summary"], data["error"]
            served = data["served"]
        except (OSError, ValueError, KeyError):
            pass  # the master ended before writing it (bad input, killed): the exit code says why
        else:
            if user_result_file:
                _copy_result(raw, user_result_file, result)
        # A master that served told its slaves to quit; one that never started cannot have.
        if not served or not supervisor.wait(slaves, SLAVE_EXIT_SECONDS):
            supervisor.stop(slaves, timeout=5)
        if result.problems and not result.error:
            result.error = "; ".join(result.problems)  # what a caller of taskmaster.run reads
        return result
    finally:
        supervisor.stop(supervisor.children, timeout=5)
        shutil.rmtree(private_dir, ignore_errors=True)
        if restore:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
