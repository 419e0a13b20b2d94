"""tm-run: a master and N slaves on this host, in one command."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from taskmaster.cli import common

DESCRIPTION = """\
Run a master and N slave processes on this host for SCRIPT (a
path/to/file.py or package.module defining get_jobs and handle_job).
Each key=value goes to get_jobs.  Exits with the master's exit code when
the run is over, leaving no process behind.  Unless --address is given,
master and slaves talk over a private ipc:// socket in a fresh directory
only you can read.
"""

MASTER_FLAGS = common.MASTER_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS
SLAVE_FLAGS = common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS
SLAVE_EXIT_SECONDS = 10.0  # after the master ends, how long slaves get to leave on their own


def build_parser(prog: str = "tm-run") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    parser.add_argument("script", metavar="SCRIPT", help="path/to/file.py or package.module")
    parser.add_argument("processes", type=common.positive_int, metavar="N", help="number of slave processes")
    parser.add_argument("kwargs", nargs="*", metavar="key=value", help="keyword arguments for get_jobs")
    parser.add_argument(
        "--get-jobs-callback",
        default="get_jobs",
        metavar="NAME",
        help="name of the function that yields jobs (default: get_jobs)",
    )
    parser.add_argument(
        "--handle-job-callback",
        default="handle_job",
        metavar="NAME",
        help="name of the function that handles one job (default: handle_job)",
    )
    common.add_address(parser, default=None)
    common.add_options(parser, common.MASTER_OPTIONS, "master options")
    common.add_options(parser, common.SLAVE_OPTIONS, "slave options")
    common.add_options(parser, common.SHARED_OPTIONS + common.COMMON_OPTIONS, "master and slave options")
    return parser


def main(argv: list[str] | None = None, prog: str = "tm-run") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    common.check_log_level(parser, args.log_level)

    def body() -> int:
        from taskmaster import target
        from taskmaster.supervisor import Supervisor, exit_code

        target.parse_kwargs(args.kwargs)
        module, _ = target.split(args.script, "get_jobs")
        get_jobs = f"{module}:{args.get_jobs_callback}"
        handle_job = f"{module}:{args.handle_job_callback}"
        target.load(get_jobs, "get_jobs")
        target.load(handle_job, "handle_job")

        private_dir = None
        address = args.address
        if address is None:
            private_dir = tempfile.mkdtemp(prefix="taskmaster-")  # mode 0700
            address = f"ipc://{os.path.join(private_dir, 'master.sock')}"
        master_argv = ["-m", "taskmaster.cli.master", get_jobs, *args.kwargs, "--address", address]
        master_argv += common.to_argv(args, MASTER_FLAGS)
        slave_argv = ["-m", "taskmaster.cli.slave", handle_job, "--address", address, "--no-progress"]
        slave_argv += [flag for flag in common.to_argv(args, SLAVE_FLAGS) if flag != "--no-progress"]

        supervisor = Supervisor()
        supervisor.forward_signals()
        try:
            master = supervisor.start(master_argv)
            slaves = [supervisor.start(slave_argv) for _ in range(args.processes)]
            while not supervisor.wait([master], timeout=0.5):
                if all(s.poll() not in (None, 0) for s in slaves):
                    sys.stderr.write(f"{prog}: error: every slave exited with an error; stopping the master\n")
                    supervisor.stop([master], timeout=30)
            if not supervisor.wait(slaves, SLAVE_EXIT_SECONDS):
                supervisor.stop(slaves, timeout=5)
            return exit_code(master.returncode)
        finally:
            supervisor.stop(supervisor.children, timeout=5)
            if private_dir:
                shutil.rmtree(private_dir, ignore_errors=True)

    common.run_command(prog, body)
    return 0  # not reached


if __name__ == "__main__":
    main()
