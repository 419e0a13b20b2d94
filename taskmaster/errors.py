"""Errors that the command line turns into one line on stderr."""


class UsageError(Exception):
    """Bad input from the user: one line, exit code 2, no traceback.

    The message says what is wrong and how to fix it.  Raised before any
    saved state is touched, so acting on it never damages a run.
    """

    exit_code = 2
