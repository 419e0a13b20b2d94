"""Transport security: a shared secret turned into ZeroMQ CURVE keys.

Every host of a run holds the same secret file.  From it each side derives
two Curve25519 key pairs, one for the master and one shared by the slaves:

* a slave needs the master's public key to complete the handshake, and only
  the holder of the master's secret key can answer it - so a slave never
  talks to (and unpickles jobs from) a master without the secret;
* the master checks every connecting slave's public key in a ZAP handler and
  refuses any other - so a stranger can neither read nor take jobs;
* all traffic is encrypted.

A failed handshake is visible on both ends through a socket monitor: the
master logs the first refusal (not a flood) and the slave says "secrets
differ" instead of hanging.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import secrets
import struct
from typing import Any, NamedTuple

import zmq
from zmq.utils import z85

from taskmaster.errors import UsageError
from taskmaster.fileio import PRIVATE

log = logging.getLogger("taskmaster.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"taskmaster"
HEADER = "taskmaster-secret-v1"
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
MONITORED = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
REFUSED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
MONITOR_EVENT = struct.Struct("=hi")  # a monitor message's first frame: the event, a value


def monitor_event(monitor: Any, flags: int = 0) -> int:
    """The next event number on a socket monitor (zmq.Again with NOBLOCK if there is none).

    Read here rather than with zmq.utils.monitor, which imports asyncio, a
    cost in every master's and slave's start-up for three lines (see
    docs/performance.rst, "Reading socket monitor events").
    """
    first, *_ = monitor.recv_multipart(flags)
    return MONITOR_EVENT.unpack(first[: MONITOR_EVENT.size])[0]


class CurveKeys(NamedTuple):
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> CurveKeys:
        def pair(label: bytes) -> tuple[bytes, bytes]:
            secret_key = z85.encode(hashlib.sha256(b"taskmaster " + label + b" key\0" + secret).digest())
            return zmq.curve_public(secret_key), secret_key

        server_public, server_secret = pair(b"master")
        client_public, client_secret = pair(b"slave")
        return cls(server_public, server_secret, client_public, client_secret)

    def secure_server(self, sock: Any) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.server_public
        sock.curve_secretkey = self.server_secret
        sock.zap_domain = ZAP_DOMAIN

    def secure_client(self, sock: Any) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret

    def accepts(self, mechanism: bytes, credentials: list[bytes]) -> bool:
        return mechanism == b"CURVE" and credentials[:1] == [z85.decode(self.client_public)]


def new_secret_file(path: str) -> None:
    """Write a fresh random secret to `path`, mode 0600; never overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        raise UsageError(f"{path} already exists: remove it first, or choose another path") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{HEADER} {secrets.token_hex(32)}\n")


def load_keys(path: str | None) -> CurveKeys | None:
    """The CURVE keys for the secret file at `path`; None without one.

    $TASKMASTER_SECRET_FILE is read where every TASKMASTER_<OPTION> is, when
    the command line is parsed (taskmaster.cli.common), not here.
    """
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read secret file {path}: {exc.strerror}; create one with tm-master --new-secret PATH"
        ) from None
    match = re.fullmatch(rf"\s*{HEADER}\s+([0-9a-f]{{64}})\s*", text)
    if not match:
        raise UsageError(f"{path} is not a taskmaster secret file; create one with tm-master --new-secret PATH")
    if os.stat(path).st_mode & 0o077:
        log.warning("secret file %s is readable by other users: chmod 600 %s", path, path)
    return CurveKeys.from_secret(bytes.fromhex(match.group(1)))


def is_loopback(address: str) -> bool:
    """True for ipc:// and tcp:// endpoints that only this host can reach."""
    if not address.startswith("tcp://"):
        return True
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*' or an interface name or a host name: reachable from elsewhere


def exposure_warning(address: str) -> str:
    return (
        f"WARNING: {address} is reachable from other hosts and no --secret-file is set: anyone who can reach "
        "this port can read and take jobs. Create a secret with 'tm-master --new-secret PATH', copy it to "
        "every slave host, and pass --secret-file PATH to every command."
    )
