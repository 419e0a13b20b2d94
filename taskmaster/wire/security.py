"""Transport security: a shared secret turned into ZeroMQ CURVE keys.

Every process of a run holds the same secret: the --secret-file, or without
one the per-user default secret of this host (taskmaster.secretfile), so
that authentication is on by default; --insecure turns it off.  From it
each side derives two Curve25519 key pairs, one for the master and one
shared by the slaves:

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
import struct
from typing import Any, NamedTuple

import zmq
from zmq.utils import z85

from taskmaster.errors import UsageError
from taskmaster.wire import secretfile

log = logging.getLogger("taskmaster.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"taskmaster"
EXPLICIT = "--secret-file"
DEFAULT = "default"
INSECURE_WARNING = (
    "WARNING: --insecure: no authentication and no encryption; any local user (and on a non-loopback "
    "address anyone who can reach it) can take jobs, control the run, or play the master and run code "
    "on the slaves"
)
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
MONITORED = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
REFUSED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
MONITOR_EVENT = struct.Struct("=hi")  # a monitor message's first frame: the event, a value


def monitor_event(monitor: Any, flags: int = 0) -> int:
    """The next event number on a socket monitor (zmq.Again with NOBLOCK if there is none)."""
    return monitor_event_value(monitor, flags)[0]


def monitor_event_value(monitor: Any, flags: int = 0) -> tuple[int, int]:
    """The next event on a socket monitor and its value (a descriptor, an error number...).

    Read here rather than with zmq.utils.monitor, which imports asyncio, a
    cost in every master's and slave's start-up for three lines (see
    docs/performance.rst, "Reading socket monitor events").
    """
    first, *_ = monitor.recv_multipart(flags)
    event, value = MONITOR_EVENT.unpack(first[: MONITOR_EVENT.size])
    return event, value


class CurveKeys(NamedTuple):
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    origin: str = EXPLICIT  # EXPLICIT or DEFAULT: which advice fits a refused handshake

    @classmethod
    def from_secret(cls, secret: bytes, origin: str = EXPLICIT) -> CurveKeys:
        def pair(label: bytes) -> tuple[bytes, bytes]:
            secret_key = z85.encode(hashlib.sha256(b"taskmaster " + label + b" key\0" + secret).digest())
            return zmq.curve_public(secret_key), secret_key

        server_public, server_secret = pair(b"master")
        client_public, client_secret = pair(b"slave")
        return cls(server_public, server_secret, client_public, client_secret, origin)

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


def keys_for(secret_file: str | None, insecure: bool, address: str) -> CurveKeys | None:
    """The CURVE keys a command uses: --secret-file's, else this user's default secret; None with --insecure.

    UsageError (one line) for a contradiction, an unusable secret, or an
    abstract ipc://@ address without a secret (no file permissions guard it:
    any local user could connect to it, or take the name first).
    """
    if insecure:
        if secret_file:
            raise UsageError("--insecure and --secret-file contradict each other: pass one of them")
        if address.startswith("ipc://@"):
            raise UsageError(
                f"{address} is an abstract socket, which any local user can connect to or take first: "
                "use it only with a secret (drop --insecure), or use ipc:///path/to/socket"
            )
        log.warning("%s", INSECURE_WARNING)
        return None
    if secret_file:
        return CurveKeys.from_secret(secretfile.read_secret(secret_file), EXPLICIT)
    secret, _path = secretfile.default_secret()
    return CurveKeys.from_secret(secret, DEFAULT)


def mismatch_hint(keys: CurveKeys | None) -> str:
    """What to do when the other end refused our handshake, given the secret we used."""
    if keys is None:
        return "this side has no secret (--insecure) and the master has one: drop --insecure"
    if keys.origin == DEFAULT:
        return (
            "this side used the default secret of this user on this host; a master on another host or of "
            "another user needs the same --secret-file PATH on every side (create one with tm-master --new-secret "
            "PATH); a master started with --insecure needs --insecure here too"
        )
    return "every side must use the same --secret-file (or --insecure, if the master has no secret)"


def is_loopback(address: str) -> bool:
    """True for ipc:// and tcp:// endpoints that only this host can reach.

    Which local users can reach an ipc:// socket is up to its file's mode:
    the master creates it 0600 (taskmaster.endpoint), and abstract ipc://@
    names need a secret (keys_for).
    """
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
        f"WARNING: {address} is reachable from other hosts and --insecure is set: anyone who can reach "
        "this port can read and take jobs. Create a secret with 'tm-master --new-secret PATH', copy it to "
        "every slave host, and pass --secret-file PATH to every command instead."
    )
