"""tm-status and tm-ctl asking a master that dies in the middle of their handshake.

A handshake cut short looks like one a master with another secret refused:
libzmq reports both as a failed handshake.  Only the master that holds
another secret goes on accepting connections; one that died does not.  So a
watcher whose master was killed says the master is gone (tm-status --watch:
exit 3, "stopped before the run was over"), not that the secrets differ
(exit 4), which sent the user looking for a secret that was never wrong.
"""

from __future__ import annotations

import socket
import threading

import pytest

from taskmaster.wire import query, security


@pytest.mark.timeout(30)
def test_a_master_gone_mid_handshake_is_no_answer_not_a_refusal():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"

    def die_mid_handshake() -> None:
        conn, _ = listener.accept()
        conn.recv(64)  # the client's greeting has begun
        listener.close()  # the master is gone: nothing listens there any more
        conn.close()

    threading.Thread(target=die_mid_handshake, daemon=True).start()
    with pytest.raises(query.NoAnswer) as raised:
        query.ask(address, [b"status"], b"STATUS", 1500, security.keys_for(None, False, address))
    assert not raised.value.refused, str(raised.value)
    assert "no master answered" in str(raised.value)
