"""``python -m taskmaster COMMAND ...``: the commands without their scripts."""

from __future__ import annotations

import sys

# command -> (the script it is, what it does in one line)
COMMANDS = {
    "master": ("tm-master", "serve the jobs of TARGET's get_jobs to slaves, checkpointing progress"),
    "slave": ("tm-slave", "run TARGET's handle_job on a master's jobs in a pool of greenlets"),
    "spawn": ("tm-spawn", "start N tm-slave processes on this host"),
    "run": ("tm-run", "a master and N slaves on this host, in one command"),
    "status": ("tm-status", "ask a running master how its run goes"),
    "ctl": ("tm-ctl", "pause, resume, rate-limit or stop a running master"),
}
USAGE = (
    "usage: python -m taskmaster {master,slave,spawn,run,status,ctl} ... (or: python -m taskmaster.cli.master ...)\n"
)
HELP = (
    USAGE
    + "\ncommands (each has --help and --version):\n"
    + "".join(f"  {name:<8} {script + ':':<11} {what}\n" for name, (script, what) in COMMANDS.items())
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        sys.stdout.write(HELP)
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(USAGE)
        sys.exit(2)
    command = sys.argv[1]
    module = __import__(f"taskmaster.cli.{command}", fromlist=["main"])
    module.main(sys.argv[2:], prog=COMMANDS[command][0])


if __name__ == "__main__":
    main()
