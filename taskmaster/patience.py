"""How long a slave keeps trying to reach its master before it gives up.

Two settings decide it: ``--retries`` tries of ``--timeout`` each (the
original's Lazy Pirate patience), and ``--wait-for-master SECONDS`` (0: for
ever) for cluster engines, where slaves often come up long before their
master or while it restarts.  Kept apart from the slave's request loop so
that the loop only asks "again?".
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

log = logging.getLogger("taskmaster.slave")


class Patience(NamedTuple):
    address: str
    retries: int
    timeout_ms: int
    wait_for_master: float | None  # None: --retries tries only; 0: for ever
    quiet: bool = False  # waiting is expected (a slave of tm-run while its master starts): no line about it

    def try_again(self, attempt: int, first_try: float) -> bool:
        """Whether a request still without an answer after `attempt` tries is worth another."""
        if attempt < self.retries:
            return True
        if self.wait_for_master is None:
            return False
        return self.wait_for_master == 0 or time.monotonic() - first_try < self.wait_for_master

    def log_retry(self, attempt: int, why: str) -> None:
        """One warning per try by default; while waiting for a master on purpose, one line, then debug."""
        if self.wait_for_master is None:
            log.warning("master at %s: %s (try %d of %d); retrying", self.address, why, attempt, self.retries)
        elif attempt == 1 and not self.quiet:
            how_long = f"up to {self.wait_for_master:g}s" if self.wait_for_master else "for ever"
            log.info("master at %s: %s; waiting for it %s (--wait-for-master)", self.address, why, how_long)
        else:
            log.debug("master at %s: %s (try %d); retrying", self.address, why, attempt)

    def describe(self) -> str:
        """How long the slave tried, as its error message says it."""
        if self.wait_for_master:
            return f"within --wait-for-master {self.wait_for_master:g}s"
        return f"after {self.retries} tries of {self.timeout_ms} ms"
