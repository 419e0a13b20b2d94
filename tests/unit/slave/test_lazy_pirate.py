"""The slave's request socket on its own, against a real ROUTER socket in-process (ipc://, real zmq)."""

from __future__ import annotations

import pytest
import zmq.green as zmq

from taskmaster.slave.lazy_pirate import LazyPirateClient, Patience


class Waiter:
    """The slave's side while a request waits: counts the waits, gives up when told to."""

    def __init__(self, give_up_after: int | None = None, on_wait=None) -> None:
        self.waits = 0
        self.give_up_after = give_up_after
        self.on_wait = on_wait  # what else happens while the request waits (here: the master answers)

    def working(self) -> bool:
        return False

    def while_waiting(self, kind: bytes) -> bool:
        self.waits += 1
        if self.on_wait is not None:
            self.on_wait()
        return self.give_up_after is not None and self.waits >= self.give_up_after

    def last_try(self) -> bool:
        return False


@pytest.fixture
def router(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    yield address, sock
    sock.close(0)


def client_for(address: str, retries: int = 2, timeout_ms: int = 100) -> LazyPirateClient:
    client = LazyPirateClient(address, None, Patience(address, retries, timeout_ms, None), "req-test")
    client.connect()
    return client


def test_a_request_gets_its_answer_from_the_connection_the_hello_names(router):
    address, sock = router
    seen: list[bytes] = []

    def answer() -> None:
        if sock.poll(0):
            identity, _kind, body = sock.recv_multipart()
            seen.append(identity)
            sock.send_multipart([identity, b"ANSWER", body])

    client = client_for(address, timeout_ms=5000)
    try:
        assert client.ask([b"ASK", b"1"], Waiter(on_wait=answer)) == [b"ANSWER", b"1"]
        assert seen == [b"req-test.1"] and client.round_trip > 0
    finally:
        client.close()


def test_no_answer_retries_on_a_new_connection_each_time_then_gives_up(router):
    address, sock = router
    client = client_for(address, retries=2, timeout_ms=100)
    waiter = Waiter()
    try:
        assert client.ask([b"ASK", b"1"], waiter) is None
        received = []
        while sock.poll(1000):
            received.append(sock.recv_multipart()[0])
            if len(received) == 2:
                break
        assert received == [b"req-test.1", b"req-test.2"]  # the same request, sent again on a fresh connection
        assert waiter.waits > 0  # the slave kept working meanwhile
        assert "no master" in client.unreachable("no master")  # no refused handshake: the caller's words
    finally:
        client.close()


def test_the_slave_can_give_up_waiting(router):
    address, _ = router
    client = client_for(address, retries=3, timeout_ms=10_000)
    try:
        assert client.ask([b"ASK", b"1"], Waiter(give_up_after=2)) is None
        assert client.connections == 1  # no retry: it gave up
    finally:
        client.close()
