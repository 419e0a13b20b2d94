"""tm-ctl's commands and --max-failures on their own: no master, no socket.

``Controls`` changes the pace, recalls slaves and refuses commands through
the send it is given (here a list), and returns what is the master's to do
(``Due``: stop the run, answer tm-ctl sockets with the run's state) - which
these tests read instead of a master acting on it.
"""

from __future__ import annotations

import logging

from taskmaster.config import MasterConfig
from taskmaster.failure_limit import MIN_RESOLVED_FOR_PERCENT, parse
from taskmaster.master.control import PAUSE_SETTLE_SECONDS, RECALL_AGAIN_SECONDS, Controls, Due, Reply
from taskmaster.master.ledger import Ledger
from taskmaster.master.pace import Pace
from taskmaster.master.registry import SlaveRegistry
from taskmaster.master.shutdown import Phase, Shutdown
from taskmaster.wire import protocol

CTL = b"tm-ctl"


class Desk:
    """What Controls works with: `jobs` jobs pulled, a registry, a pace, a shutdown, and what it sent to whom."""

    def __init__(
        self, address: str = "tcp://127.0.0.1:3050", secure: bool = False, max_failures=None, jobs: int = 20
    ) -> None:
        limit = parse(max_failures) if max_failures is not None else None
        self.config = MasterConfig(address=address, max_failures=limit, grace=5.0)
        self.ledger = Ledger(max(100, jobs), stretch=1)
        self.ledger.add(list(range(jobs)))
        self.registry = SlaveRegistry(self.ledger, lease_timeout=30)
        self.pace = Pace(None, 0.0)
        self.shutdown = Shutdown(grace=5.0, linger=0.0)
        self.sent: list[tuple[bytes, list[bytes]]] = []
        self.controls = Controls(
            self.config, secure, self.pace, self.ledger, self.registry, self.shutdown,
            lambda identity, frames: self.sent.append((identity, frames)),
        )

    def join(self, name: str):
        slave = self.registry.join(name, "host", 1, 4, 3000, name.encode(), now=0.0)
        self.registry.hello(slave, f"{name}-beat".encode(), b"")
        return slave

    def hand(self, slave, n: int) -> int:
        """A batch of `n` jobs handed to `slave` and not started yet; its id."""
        _, ranges = self.ledger.take(n, slave.id, alone=False)
        batch = self.registry.hand_out(slave, ranges)
        self.registry.handed(slave, batch)  # as the dispatcher records it
        return batch

    def command(self, command: str, rate: float | None = None, timeout_ms: int = 2500, now: float = 0.0) -> Due:
        return self.controls.handle(CTL, protocol.ControlRequest(command, rate, timeout_ms), now)

    def to(self, identity: bytes) -> list[tuple[bytes, dict, list | None]]:
        return [protocol.decode_from_master(frames) for i, frames in self.sent if i == identity]


# ------------------------------------------------------------ commands


def test_a_pause_with_no_slave_is_due_an_answer_at_once():
    desk = Desk()
    due = desk.command("pause")
    assert due == Due(stop=False, replies=[Reply([CTL], "pause", 0)])
    assert desk.pace.paused and desk.controls.pending == []
    assert desk.sent == []  # the answer is the master's to send, with the run's state


def test_a_pause_while_jobs_are_held_recalls_them_and_is_answered_once_they_are_given_back():
    desk = Desk()
    a = desk.join("a")
    batch = desk.hand(a, 5)
    assert desk.command("pause") == Due()  # a holds 5 jobs not started: the answer waits
    [(kind, header, _)] = desk.to(b"a-beat")
    assert kind == protocol.RECALL and header == {"want": protocol.MAX_WANT, "upto": batch}
    assert not desk.controls.settled(a)
    # a started 2 of them and gives the other 3 back (what its GIVEBACK and request say).
    desk.registry.give_back(a, batch, 2)
    desk.registry.note_queue(a, [(batch, 2, 2)])
    assert desk.controls.settled(a)
    assert desk.controls.on_news(a, 0.01) == Due(replies=[Reply([CTL], "pause", 0)])
    assert desk.controls.pending == []


def test_a_pause_whose_slave_does_not_settle_is_answered_at_its_deadline_with_the_count():
    desk = Desk()
    a = desk.join("a")
    desk.hand(a, 5)
    assert desk.command("pause", timeout_ms=1000) == Due()  # answered within half tm-ctl's timeout
    assert desk.controls.answer_settled(0.49) == Due()
    assert desk.controls.answer_settled(0.5) == Due(replies=[Reply([CTL], "pause", 1)])
    assert desk.controls.pending == [] and desk.pace.paused


def test_a_pause_waits_at_most_its_settle_time_however_patient_tm_ctl_is():
    desk = Desk()
    desk.hand(desk.join("a"), 5)
    desk.command("pause", timeout_ms=60_000)
    assert desk.controls.answer_settled(PAUSE_SETTLE_SECONDS - 0.01) == Due()
    assert desk.controls.answer_settled(PAUSE_SETTLE_SECONDS).replies == [Reply([CTL], "pause", 1)]


def test_two_pauses_waiting_are_answered_together_and_the_second_logs_nothing(caplog):
    desk = Desk()
    desk.hand(desk.join("a"), 5)
    caplog.set_level(logging.WARNING, logger="taskmaster.master")
    desk.command("pause")
    desk.controls.handle(b"other", protocol.ControlRequest("pause"), 0.1)
    assert [r.getMessage() for r in caplog.records].count(
        "paused (tm-ctl): no job starts until tm-ctl resume; the jobs running finish"
    ) == 1
    assert len(desk.to(b"a-beat")) == 2  # each pause recalls again
    assert desk.controls.answer_settled(10.0) == Due(replies=[Reply([CTL, b"other"], "pause", 1)])


def test_while_paused_only_slaves_still_holding_unstarted_jobs_are_recalled_again_and_not_too_often():
    desk = Desk()
    a, _ = desk.join("a"), desk.join("b")
    desk.hand(a, 5)
    desk.command("pause", now=0.0)
    before = len(desk.to(b"a-beat")), len(desk.to(b"b-beat"))
    desk.controls.recall_again(RECALL_AGAIN_SECONDS / 2)
    assert (len(desk.to(b"a-beat")), len(desk.to(b"b-beat"))) == before  # asked a moment ago
    desk.controls.recall_again(RECALL_AGAIN_SECONDS)
    assert (len(desk.to(b"a-beat")), len(desk.to(b"b-beat"))) == (before[0] + 1, before[1])  # b holds nothing


def test_resume_goes_on_handing_out_and_is_due_its_answer():
    desk = Desk()
    desk.command("pause")
    assert desk.command("resume") == Due(replies=[Reply([CTL], "resume")])
    assert not desk.pace.paused and desk.pace.allowance(10, 0.0) == 10
    assert desk.command("resume") == Due(replies=[Reply([CTL], "resume")])  # not paused: nothing changes
    assert not desk.pace.paused


def test_a_rate_changes_the_pace_live_and_rate_off_lifts_it():
    desk = Desk()
    assert desk.command("rate", rate=50.0, now=1.0) == Due(replies=[Reply([CTL], "rate")])
    assert desk.pace.rate_limit == 50.0
    assert desk.pace.allowance(100, 1.0) == 5  # a burst of 0.1 s at 50 a second
    desk.command("rate", rate=None, now=2.0)
    assert desk.pace.rate_limit is None and desk.pace.allowance(100, 2.0) == 100


def test_stop_is_due_a_stop_and_its_answer_and_changes_nothing_itself():
    desk = Desk()
    assert desk.command("stop") == Due(stop=True, replies=[Reply([CTL], "stop")])
    assert desk.shutdown.phase is Phase.RUNNING  # stopping is the master's: it stops as by SIGTERM


def test_a_command_is_refused_without_a_secret_on_an_address_other_hosts_reach():
    desk = Desk(address="tcp://0.0.0.0:3050", secure=False)
    for command in ("pause", "rate", "stop"):
        assert desk.command(command, rate=5.0 if command == "rate" else None) == Due()
    assert not desk.pace.paused and desk.pace.rate_limit is None
    answers = desk.to(CTL)
    assert len(answers) == 3 and desk.controls.refused == 3
    kind, header, _ = answers[0]
    assert kind == protocol.CONTROL and header["ok"] is False
    assert "without a secret" in header["error"] and "--secret-file" in header["error"]


def test_a_command_is_accepted_with_a_secret_or_on_a_loopback_or_ipc_address():
    for address, secure in (("tcp://0.0.0.0:3050", True), ("tcp://[::1]:3050", False), ("ipc:///tmp/x", False)):
        desk = Desk(address=address, secure=secure)
        assert desk.command("pause").replies == [Reply([CTL], "pause", 0)], address
        assert desk.pace.paused and desk.sent == []


def test_a_command_tm_ctl_does_not_have_is_refused_and_changes_nothing():
    desk = Desk()
    assert desk.command("reboot") == Due()
    [(kind, header, _)] = desk.to(CTL)
    assert kind == protocol.CONTROL
    assert header == {"ok": False, "error": "unknown command 'reboot' (pause, resume, rate, stop)"}
    assert not desk.pace.holding and desk.pace.rate_limit is None


# ------------------------------------------------------- --max-failures


def test_no_max_failures_never_halts():
    desk = Desk()
    for position in range(10):
        desk.ledger.mark_failed(position)
    assert desk.controls.check_failures(0.0) == Due()
    assert desk.pace.halted is None


def test_more_failures_than_max_failures_halt_once_recall_every_slave_and_stop_the_run():
    desk = Desk(max_failures="2")
    desk.join("a"), desk.join("b")
    for position in range(2):
        desk.ledger.mark_failed(position)
    assert desk.controls.check_failures(0.0) == Due()  # 2 is not more than 2
    desk.ledger.mark_failed(2)
    assert desk.controls.check_failures(1.0) == Due(stop=True)
    assert desk.pace.halted == "3 jobs failed for good in this run, more than --max-failures 2"
    assert desk.pace.holding and desk.pace.allowance(10, 1.0) == 0
    assert [kind for kind, _, _ in desk.to(b"a-beat") + desk.to(b"b-beat")] == [protocol.RECALL] * 2
    desk.ledger.mark_failed(3)
    assert desk.controls.check_failures(2.0) == Due()  # halted already: once
    assert desk.controls.halt_reason() == "4 jobs failed for good in this run, more than --max-failures 2"


def test_a_halt_while_the_run_stops_already_halts_without_stopping_it_again():
    desk = Desk(max_failures="0")
    desk.shutdown.stop(15, 0.0)
    desk.ledger.mark_failed(0)
    assert desk.controls.check_failures(0.5) == Due(stop=False)
    assert desk.pace.halted is not None


def test_a_percentage_halts_only_once_enough_jobs_resolved_to_judge():
    desk = Desk(max_failures="10%", jobs=MIN_RESOLVED_FOR_PERCENT + 100)
    for position in range(100):
        desk.ledger.mark_failed(position)
    assert desk.controls.check_failures(0.0) == Due()  # 100 of 100 failed, but too few resolved to judge
    desk.ledger.mark_done([(100, MIN_RESOLVED_FOR_PERCENT)])
    assert desk.controls.check_failures(0.0) == Due()  # 100 of 1000: 10 %, not more
    desk.ledger.mark_failed(MIN_RESOLVED_FOR_PERCENT)
    assert desk.controls.check_failures(0.0) == Due(stop=True)  # 101 of 1001
    assert desk.pace.halted.startswith("101 of 1001 jobs resolved in this run failed for good (10.1%)")
