"""Which connections may speak for a slave: its token counts only on its own.

A token travels in plaintext without a secret: whoever captured it could
replay it.  It counts only on the connections of the slave it was issued
to: the routing id its HELLO came from, the ones that HELLO named
(``conn.N``: a Lazy Pirate retry opens the next one, and costs no rejoin)
and, for the liveness thread, ``beat``.  Frames replayed from any other
connection are refused, and change nothing.  (An attacker who also reads
those names off the handshake and connects under them is beyond what a run
without --secret-file can stop.)
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from taskmaster.logformat import now_and_then

if TYPE_CHECKING:
    from taskmaster.master.registry import SlaveRecord, SlaveRegistry

log = logging.getLogger("taskmaster.master")


class Channel(enum.Enum):
    """Which of a slave's messages this is, for the checks it must pass."""

    REQUEST = "request"  # a REQUEST or BYE: from one of its request connections, not one it gave up
    ACK = "ack"  # a one-way ACK: from one of its request connections, while it has not said BYE
    BEAT = "beat"  # a HEARTBEAT or GIVEBACK: from its liveness connection only


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    UNKNOWN_RUN = "this master does not know that run; say hello again"
    UNKNOWN_TOKEN = "unknown slave token; say hello again"
    FOREIGN = "that token belongs to another connection; say hello again"
    STALE = "a connection the slave gave up"  # ignored: everything in it comes again on the newer one
    GONE = "the slave said goodbye"  # ignored: it has left


# The verdicts a REQUEST is answered (with RESET) for; the others are ignored.
ANSWERED = (Verdict.UNKNOWN_RUN, Verdict.UNKNOWN_TOKEN, Verdict.FOREIGN)


class TokenBinding:
    def __init__(self, registry: SlaveRegistry) -> None:
        self.registry = registry  # where a slave's newest connection is recorded
        self.refused = 0  # messages with a slave's token from a connection it was not issued on

    def admit(
        self, slave: SlaveRecord | None, run: str, run_id: str, token: str, identity: bytes, channel: Channel
    ) -> Verdict:
        """May a message of `channel` from `identity`, for run `run` with `token`, speak for `slave`?

        The one check of every message that carries a token, in one order:
        this run (and a slave it knows), the slave's token, then the
        connection it came from.  Acknowledgements meant for another run of
        a master may not be this run's jobs; a wrong token is not the process
        that said hello under this id (or an impostor); a token replayed from
        another connection changes nothing.
        """
        if slave is None or run != run_id:
            return Verdict.UNKNOWN_RUN
        if token != slave.token:
            return Verdict.UNKNOWN_TOKEN
        if channel is Channel.BEAT:
            return Verdict.FOREIGN if self.foreign(slave, identity, slave.beat_identity) else Verdict.ADMITTED
        if channel is Channel.ACK and slave.gone:
            return Verdict.GONE
        if self.foreign_request(slave, identity):
            return Verdict.FOREIGN
        if channel is Channel.REQUEST and self.stale_request(slave, identity):
            return Verdict.STALE
        return Verdict.ADMITTED

    @staticmethod
    def connection_number(slave: SlaveRecord, identity: bytes) -> int | None:
        """N if `identity` is `slave`'s request connection conn.N, else None."""
        if slave.conn and identity.startswith(slave.conn + b".") and identity[len(slave.conn) + 1 :].isdigit():
            return int(identity[len(slave.conn) + 1 :])
        return None

    def request_connection(self, slave: SlaveRecord, identity: bytes) -> bytes:
        """`identity` if it is one of `slave`'s request connections (the HELLO's, or conn.N), else the HELLO's."""
        return identity if self.connection_number(slave, identity) is not None else slave.identity

    def stale_request(self, slave: SlaveRecord, identity: bytes) -> bool:
        """Is this request from a connection older than the newest `slave` has used - one it gave up?

        A Lazy Pirate retry closes the socket whose request went unanswered
        and sends the same request on the next one.  What the old TCP
        connection still held can reach us after a network cut heals, after
        the retry: answering it would lease jobs to a connection nobody reads
        (and, taken for "the same request again", take back the batch the
        retry's answer gave the slave).  Everything in it comes again on the
        newer connection, so it is ignored.
        """
        number = self.connection_number(slave, identity)
        if number is None:
            return False
        if number < slave.newest_conn:
            return True
        self.registry.spoke_on(slave, number)
        return False

    def stale_hello(self, known: SlaveRecord, conn: bytes, identity: bytes) -> bool:
        """Is this HELLO a late copy from a connection older than the newest the slave (`known`) used?

        As with a late request (``stale_request``): the Lazy Pirate client said
        hello again on a newer connection and was welcomed there.  Taken for a
        new incarnation, the old copy would change the slave's token and take
        back the jobs it works on, which a pause would then count as settled.
        """
        if known.conn != conn:
            return False
        number = self.connection_number(known, identity)
        return number is not None and number < known.newest_conn

    def opened(self, slave: SlaveRecord, identity: bytes, newest: int) -> None:
        """`slave` said hello on `identity`: its newest connection, unless it used a newer one (`newest`)."""
        self.registry.spoke_on(slave, max(newest, self.connection_number(slave, identity) or 0))

    def foreign(self, slave: SlaveRecord, identity: bytes, bound: bytes | None) -> bool:
        """Does a message with `slave`'s token come from a connection other than the one it is bound to?"""
        if identity == bound:
            return False
        self.refused += 1
        if now_and_then(self.refused):
            log.warning("refused slave %s's token from another connection (%d so far)", slave.id, self.refused)
        return True

    def foreign_request(self, slave: SlaveRecord, identity: bytes) -> bool:
        """A REQUEST or ACK: from a connection other than `slave`'s request connections?"""
        return self.foreign(slave, identity, self.request_connection(slave, identity))
