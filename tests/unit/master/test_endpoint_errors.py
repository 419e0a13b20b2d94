"""The master's socket swallows only the send errors a gone or slow peer causes.

A peer that disconnected (EHOSTUNREACH, with ROUTER_MANDATORY) or a full
queue (EAGAIN) is expected: the slave asks again.  Anything else - a socket
closed under the loop (ENOTSOCK), a terminated context (ETERM) - is a bug
that must surface, not a reply silently lost.  Real zmq sockets, in-process.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest
import zmq.green as zmq

from taskmaster.master.endpoint import MasterEndpoint


@pytest.fixture
def endpoint(tmp_path):
    ep = MasterEndpoint(f"ipc://{tmp_path / 'master.sock'}", None)
    ep.bind()
    yield ep
    ep.close()


def test_a_reply_to_a_peer_that_is_gone_is_dropped_quietly(endpoint):
    endpoint.send(b"nobody-by-this-name", [b"NO_JOBS", b"{}"])
    endpoint.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # now an unknown peer is EHOSTUNREACH
    endpoint.send(b"nobody-by-this-name", [b"NO_JOBS", b"{}"])


def test_a_reply_to_a_peer_that_is_not_reading_is_dropped_quietly(endpoint, tmp_path):
    context = zmq.Context.instance()
    peer = context.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.RCVHWM, 1)
    peer.setsockopt(zmq.IDENTITY, b"slow")
    peer.connect(endpoint.address)
    try:
        endpoint.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        endpoint.socket.setsockopt(zmq.SNDHWM, 1)
        peer.send_multipart([b"HELLO", b"{}"])
        assert endpoint.socket.poll(5000)
        endpoint.socket.recv_multipart()
        for _ in range(10_000):  # far past both high-water marks: EAGAIN comes
            endpoint.send(b"slow", [b"NO_JOBS", b"x" * 1000])
    finally:
        peer.close(0)


def test_a_closed_socket_is_an_error_not_a_lost_reply(endpoint):
    endpoint.socket.close(0)
    with pytest.raises(zmq.ZMQError) as raised:
        endpoint.send(b"anyone", [b"NO_JOBS", b"{}"])
    assert raised.value.errno == errno.ENOTSOCK
    endpoint.socket = None  # already closed: nothing for the fixture to close


def test_a_terminated_context_is_an_error_not_a_lost_reply(tmp_path):
    context = zmq.Context()
    ep = MasterEndpoint(f"ipc://{tmp_path / 'other.sock'}", None)
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(ep.address)
    ep.socket = sock
    # term() blocks until every socket is closed: from a real thread, so this one can see ETERM.
    terminator = threading.Thread(target=context.term)
    terminator.start()
    try:
        with pytest.raises(zmq.ZMQError) as raised:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the thread got as far as terminating
                ep.send(b"anyone", [b"NO_JOBS", b"{}"])
                time.sleep(0.001)
        assert raised.value.errno == zmq.ETERM
    finally:
        sock.close(0)
        terminator.join(10)
