"""Three "hosts" on one machine: network namespaces joined by a private bridge.

    with Network() as net:                       # namespaces A, B, C
        argv = net.wrap("A", ["python", "-m", "taskmaster", "master", ...])
        net.address("A")                          # '10.201.0.1'
        net.link_down("B"); net.link_up("B")      # unplug and plug B's cable

or, in a test, the ``network`` fixture (skipped, with the reason, when
namespaces cannot be created here: not root, no ``ip``, no CAP_SYS_ADMIN).

Layout (nothing is created in the root namespace, so no traffic can leave
the machine or reach any other address)::

    tm<pid>x<k>-A  eth0 10.201.0.1/24 --+
    tm<pid>x<k>-B  eth0 10.201.0.2/24 --+-- br0 in tm<pid>x<k>-br (a 4th namespace)
    tm<pid>x<k>-C  eth0 10.201.0.3/24 --+

Each veth pair has one end (``eth0``) in a host namespace and the other
(``vA``, ``vB``, ...) on the bridge.  No namespace has a default route: the
only reachable addresses are the three above and each namespace's loopback.
The subnet exists only inside these namespaces, so concurrent test runs (each
with their own namespaces) cannot collide even though they use the same one.

``link_down(host)`` sets the bridge end of the host's veth down, which is what
unplugging its cable at the switch does: the host keeps its address and its
sockets, its packets are silently dropped (TCP retransmits, nothing is
refused), and ``link_up`` restores the path.  ``link_down(host,
side="host")`` sets the host's own ``eth0`` down instead (its routes go, and
connects fail at once with "network unreachable").

Teardown (also when set-up fails half-way, and at interpreter exit if a test
was interrupted) kills the processes still running inside the namespaces -
they can only be ours - and deletes the namespaces, which destroys the veths
and the bridge with them.  Namespaces left behind by a test run that was
SIGKILLed (their name carries the pid of a process that no longer exists) are
deleted at the next start.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

PREFIX = "tm"  # namespace names: tm<pid>x<k>-<host>
SUBNET = "10.201.0"  # /24, only inside our namespaces
IP = shutil.which("ip") or "/usr/sbin/ip"
_counter = itertools.count(1)
_NAME = re.compile(rf"^{PREFIX}(\d+)x(\d+)-(\w+)$")


class NetnsUnavailable(Exception):
    """Network namespaces cannot be created here; the message says why."""


def _ip(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not os.path.exists(IP):
        return "the `ip` command (iproute2) is not installed"
    return None


def list_namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process running in `namespace` (they are ours: we made it)."""
    result = _ip("netns", "pids", namespace, check=False)
    for pid in (int(p) for p in result.stdout.split() if p.isdigit()):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete(namespace: str) -> None:
    _kill_inside(namespace)
    _ip("netns", "del", namespace, check=False)


def remove_stale() -> list[str]:
    """Delete namespaces of ours left by a test run whose process is gone."""
    removed = []
    for name in list_namespaces():
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete(name)
            removed.append(name)
    return removed


class Network:
    """Hosts (network namespaces) on a private bridge; see the module docstring."""

    def __init__(self, hosts: Sequence[str] = ("A", "B", "C"), subnet: str = SUBNET) -> None:
        if not hosts or len(hosts) > 200:
            raise ValueError("between 1 and 200 hosts")
        self.hosts = list(hosts)
        self.subnet = subnet
        self.tag = f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.bridge_ns = f"{self.tag}-br"
        self.created: list[str] = []
        self._closed = True

    # ------------------------------------------------------------ names

    def ns(self, host: str) -> str:
        """The namespace of `host`."""
        if host not in self.hosts:
            raise KeyError(f"no host {host!r}; hosts are {self.hosts}")
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        """The host's IPv4 address on the private subnet."""
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def wrap(self, host: str, argv: Sequence[object]) -> list[str]:
        """argv that runs `argv` inside the host's namespace (same user, files, environment)."""
        return [IP, "netns", "exec", self.ns(host), *map(str, argv)]

    def run(self, host: str, argv: Sequence[object], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run(self.wrap(host, argv), **kwargs)

    # ------------------------------------------------------------ life

    def __enter__(self) -> Network:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        remove_stale()
        self._closed = False
        atexit.register(self.close)
        try:
            self._create(self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for host in self.hosts:
                ns, port = self.ns(host), self._port(host)
                self._create(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
                _ip("-n", self.bridge_ns, "link", "set", port, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
            self.wait_reachable()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self, ns: str) -> None:
        result = _ip("netns", "add", ns, check=False)
        if result.returncode != 0:
            raise NetnsUnavailable(f"cannot create a network namespace: {result.stderr.strip()}")
        self.created.append(ns)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill what runs inside, delete every namespace (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for attempt in range(3):
            for ns in reversed(self.created):
                try:
                    _kill_inside(ns)
                    _ip("netns", "del", ns, check=False)
                except (OSError, subprocess.SubprocessError):
                    pass  # checked below, and tried again
            present = set(list_namespaces())
            self.created = [ns for ns in self.created if ns in present]
            if not self.created:
                break
            time.sleep(0.2 * (attempt + 1))
        atexit.unregister(self.close)
        if self.created:
            raise RuntimeError(f"could not delete network namespaces {self.created}: run `ip netns del NAME`")

    # ----------------------------------------------------------- links

    def _port(self, host: str) -> str:
        return f"v{self.hosts.index(host)}{host}"[:15]

    def link_down(self, host: str, side: str = "bridge") -> None:
        """Cut the host off the network: its veth down at the bridge (or, side="host", its own eth0)."""
        self._set_link(host, side, "down")

    def link_up(self, host: str, side: str = "bridge") -> None:
        self._set_link(host, side, "up")

    def _set_link(self, host: str, side: str, state: str) -> None:
        if side == "bridge":
            _ip("-n", self.bridge_ns, "link", "set", self._port(host), state)
        elif side == "host":
            _ip("-n", self.ns(host), "link", "set", "eth0", state)
        else:
            raise ValueError("side is 'bridge' or 'host'")

    def reachable(self, src: str, dst: str, timeout: float = 1.0) -> bool:
        """Can `src` reach `dst`?  A TCP connect to a closed port: refused means the packets got there."""
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(({self.address(dst)!r}, 9), timeout={timeout})\n"
            "except ConnectionRefusedError:\n"
            "    sys.exit(0)\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return self.run(src, [sys.executable, "-c", probe], timeout=timeout + 10).returncode == 0

    def wait_reachable(self, timeout: float = 10.0) -> None:
        """Every host reaches every other (the bridge forwards at once without STP, but be sure)."""
        deadline = time.monotonic() + timeout
        first = self.hosts[0]
        for other in self.hosts[1:]:
            while not self.reachable(first, other):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{other} unreachable from {first} on the test bridge")
                time.sleep(0.1)


@pytest.fixture
def network() -> Iterator[Network]:
    """Hosts A, B and C on a private bridge; skipped (with the reason) where namespaces are impossible."""
    net = Network()
    try:
        net.__enter__()
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        yield net
    finally:
        net.close()
