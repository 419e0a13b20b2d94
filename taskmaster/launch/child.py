"""Start-up of a child of the supervisor: die with the parent, then run the command.

``python -m taskmaster.launch.child taskmaster.cli.slave ARGS...`` asks the
kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG), checks the parent
did not die before that request took effect, and runs the command module as
``python -m`` would.  Doing this in the child, after exec, rather than between
fork and exec (``preexec_fn``) keeps starting children safe in a threaded
program: no Python code runs in a forked copy of it.
"""

from __future__ import annotations

import runpy
import sys

from taskmaster.launch.supervisor import die_with_parent, name_process

COMMAND_PREFIX = "taskmaster.cli."


def main(argv: list[str]) -> None:
    die_with_parent()
    module, *args = argv
    if module.startswith(COMMAND_PREFIX):
        # ps shows tm-slave ..., not "python -m taskmaster.launch.child taskmaster.cli.slave ...".
        name_process("tm-" + module[len(COMMAND_PREFIX) :], args)
    sys.argv = [module, *args]  # run_module sets argv[0] to the module's file
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
