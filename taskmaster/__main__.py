"""``python -m taskmaster COMMAND ...``: the commands without their scripts."""

from __future__ import annotations

import sys

COMMANDS = {
    "master": "tm-master",
    "slave": "tm-slave",
    "spawn": "tm-spawn",
    "run": "tm-run",
    "status": "tm-status",
    "ctl": "tm-ctl",
}
USAGE = (
    "usage: python -m taskmaster {master,slave,spawn,run,status,ctl} ... (or: python -m taskmaster.cli.master ...)\n"
)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(USAGE)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    command = sys.argv[1]
    module = __import__(f"taskmaster.cli.{command}", fromlist=["main"])
    module.main(sys.argv[2:], prog=COMMANDS[command])


if __name__ == "__main__":
    main()
