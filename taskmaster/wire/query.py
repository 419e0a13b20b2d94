"""One question to a running master, one JSON answer: what tm-status and tm-ctl use.

A short-lived DEALER socket, secured like a slave's when there is a secret.
It never blocks past its timeout, unpickles nothing (whoever answers at that
address), and tells a master that refused the handshake (the secrets differ)
from one that is not there.
"""

from __future__ import annotations

import json
import time
from typing import Any

import zmq

from taskmaster.wire import security
from taskmaster.wire.security import CurveKeys

REFUSALS_BELIEVED = 3  # failed handshakes in a row that mean the master refuses us (libzmq retries every 100 ms)


class NoAnswer(Exception):
    """No usable answer within the timeout; `refused` when the master refused the handshake."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def ask(address: str, frames: list[bytes], kind: bytes, timeout_ms: int, keys: CurveKeys | None = None) -> dict:
    """Send `frames` to the master at `address`; its answer of `kind`, a JSON object.

    Raises NoAnswer when none comes within `timeout_ms`.
    """
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    monitor: Any = None
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        if keys is not None:
            keys.secure_client(sock)
        monitor = sock.get_monitor_socket(security.MONITORED | zmq.EVENT_CONNECTED)
        sock.connect(address)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)  # not blocking: the timeout bounds the whole question
        except zmq.Again:
            raise NoAnswer(f"no master answered at {address} within {timeout_ms} ms") from None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_ms / 1000
        failures = 0
        # A handshake cut short (no detail) is also what a master that dies in
        # the middle of it leaves: believe it a refusal only if the master was
        # still there to connect to afterwards, as one holding another secret is.
        refused = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and refused:
                raise _refused(address, keys)
            if left <= 0:
                raise NoAnswer(f"no master answered at {address} within {timeout_ms} ms")
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if sock in ready:
                return _decode(sock.recv_multipart(), kind, address)
            if monitor in ready:
                event = security.monitor_event(monitor)
                if event & security.HANDSHAKE_FAILED:
                    failures += 1
                    refused = refused or bool(event & security.REFUSED)
                elif event == zmq.EVENT_CONNECTED and failures:
                    refused = True
            if failures >= REFUSALS_BELIEVED:
                # Keys that do not match fail the same way every time: no point waiting on.
                # (Once is not enough: a master short of connections drops some mid-handshake;
                # and libzmq may not try again after a refusal: then the deadline decides.)
                raise _refused(address, keys)
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(0)
        sock.close(0)
        context.term()


def _refused(address: str, keys: CurveKeys | None) -> NoAnswer:
    return NoAnswer(
        f"the master at {address} refused this connection: secrets differ ({security.mismatch_hint(keys)})",
        refused=True,
    )


def _decode(frames: list[bytes], kind: bytes, address: str) -> dict:
    if len(frames) == 2 and frames[0] == kind:
        try:
            answer = json.loads(frames[1])
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            return answer
    raise NoAnswer(f"what answered at {address} is not a taskmaster master (or an older one)")
