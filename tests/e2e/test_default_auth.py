"""Authenticated by default (issue 23): the per-user secret, --insecure, ipc sockets, secret modes, --watch.

Every command of one user on one host shares a secret made on first use in
$XDG_CONFIG_HOME/taskmaster; each test here points XDG_CONFIG_HOME at a
directory of its own.  Real processes, 127.0.0.1 and ipc:// only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from conftest import (
    handled,
    start_logged,
    tail,
    tcp_address,
    text,
    tm,
    wait_exit,
    wait_listening,
)

INSECURE_WARNING = "--insecure: no authentication"


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def config_home(tmp_path):
    """A fresh XDG_CONFIG_HOME: no default secret yet."""
    home = tmp_path / "config"
    return home, {"XDG_CONFIG_HOME": str(home), "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": ""}


def one_error_line(result, *fragments: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# For a master whose one slave runs jobs (so it joined before the end and hears "quit" on its
# request): the default --linger would hold a short run's master 3 s from its start for slaves
# that never came, a wait these tests do not check.
SHORT_LINGER = ("--linger", "0.5")


# ---------------------------------------------------------- the default secret


@pytest.mark.timeout(120)
def test_plain_commands_share_a_private_per_user_secret_made_on_first_use(procs, tmp_path, recording, config_home):
    module, record, env = recording
    home, extra = config_home
    env = {**env, **extra}
    address = tcp_address()
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    with umask(0):  # whatever the umask, the secret and its directory are private
        argv = tm("master", module, "n=300", "--address", address, "--no-progress", *SHORT_LINGER)
        master = start_logged(procs, argv, mlog, env)
        wait_listening(master, mlog)
    secret = home / "taskmaster" / "secret"
    assert secret.exists(), f"no default secret in {home}: {list(home.rglob('*')) if home.exists() else 'none'}"
    assert mode(home / "taskmaster") == 0o700, oct(mode(home / "taskmaster"))
    assert mode(secret) == 0o600, oct(mode(secret))
    assert re.fullmatch(r"taskmaster-secret-v1 [0-9a-f]{64}\n", secret.read_text())

    # tm-status with no argument is let in; one that claims no secret is refused (exit 4).
    status = procs.run(tm("status", "--address", address, "--json", "--timeout", "10000"), env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "running"
    plain = procs.run(tm("status", "--address", address, "--timeout", "3000", "--insecure"), env=env)
    assert plain.returncode == 4, (plain.returncode, plain.stdout, plain.stderr)
    assert plain.stdout == "" and "secrets differ" in plain.stderr, plain.stderr

    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), slog, env)
    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    assert set(handled(record)) == set(range(300))
    assert "WARNING" not in text(slog), text(slog)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("problem", ["directory-open", "secret-open", "secret-of-another-user"])
def test_a_default_secret_others_could_read_or_plant_is_refused(procs, tmp_path, recording, config_home, problem):
    module, _, env = recording
    home, extra = config_home
    directory, secret = home / "taskmaster", home / "taskmaster" / "secret"
    directory.mkdir(parents=True, mode=0o700)
    secret.write_text("taskmaster-secret-v1 " + "ab" * 32 + "\n")
    secret.chmod(0o600)
    if problem == "directory-open":
        directory.chmod(0o755)
    elif problem == "secret-open":
        secret.chmod(0o644)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file to another user")
        os.chown(secret, 65534, 65534)
    result = procs.run(tm("master", module, "--address", tcp_address(), "--no-progress"), env={**env, **extra})
    assert result.returncode == 2, (result.returncode, result.stderr)
    one_error_line(result, "refusing the default secret", "--secret-file")


# ---------------------------------------------------------------- --insecure


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_insecure_is_an_explicit_choice_that_warns(procs, tmp_path, recording, config_home, how):
    module, record, env = recording
    _, extra = config_home
    env = {**env, **extra}
    flag = ["--insecure"] if how == "flag" else []
    if how == "env":
        env["TASKMASTER_INSECURE"] = "1"
    address = tcp_address()
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(
        procs, tm("master", module, "n=200", "--address", address, "--no-progress", *flag, *SHORT_LINGER), mlog, env
    )
    wait_listening(master, mlog)
    assert INSECURE_WARNING in text(mlog), text(mlog)
    ctl = procs.run(tm("ctl", "--address", address, "--timeout", "10000", *flag, "resume"), env=env)
    assert ctl.returncode == 0, ctl.stderr
    # A default (secret-holding) client is refused by an insecure master's handshake.
    keyed = procs.run(tm("ctl", "--address", address, "--timeout", "3000", "resume"), env=extra)
    assert keyed.returncode == 4, (keyed.returncode, keyed.stderr)
    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress", *flag), slog, env)
    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    assert set(handled(record)) == set(range(200))


@pytest.mark.timeout(60)
def test_insecure_and_a_secret_file_contradict(procs, tmp_path, recording, config_home):
    module, _, env = recording
    secret = tmp_path / "secret"
    assert procs.run(tm("master", "--new-secret", secret)).returncode == 0
    result = procs.run(
        tm("master", module, "--address", tcp_address(), "--insecure", "--secret-file", secret), env=config_home[1]
    )
    assert result.returncode == 2
    one_error_line(result, "--insecure and --secret-file")


# ------------------------------------------------------------------- ipc://


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["master", "slave", "status", "ctl"])
def test_an_abstract_ipc_address_needs_a_secret(procs, tmp_path, recording, config_home, command):
    module, _, env = recording
    address = f"ipc://@taskmaster-test-{os.getpid()}-{tmp_path.name}"
    argv = {
        "master": tm("master", module, "--address", address),
        "slave": tm("slave", module, "--address", address, "--retries", "1", "--timeout", "200"),
        "status": tm("status", "--address", address, "--timeout", "200"),
        "ctl": tm("ctl", "--address", address, "--timeout", "200", "pause"),
    }[command]
    result = procs.run([*argv, "--insecure"], env={**env, **config_home[1]})
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if INSECURE_WARNING not in line]
    assert len(lines) == 1 and "abstract socket" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_an_abstract_ipc_address_works_with_the_default_secret(procs, tmp_path, recording, config_home):
    module, record, env = recording
    env = {**env, **config_home[1]}
    address = f"ipc://@taskmaster-test-{os.getpid()}-{tmp_path.name}"
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    argv = tm("master", module, "n=100", "--address", address, "--no-progress", *SHORT_LINGER)
    master = start_logged(procs, argv, mlog, env)
    wait_listening(master, mlog)
    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), slog, env)
    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    assert set(handled(record)) == set(range(100))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("secure", [True, False], ids=["default-secret", "insecure"])
def test_the_ipc_socket_is_private_whatever_the_umask(procs, tmp_path, recording, config_home, secure):
    module, _, env = recording
    sock = tmp_path / "master.sock"
    mlog = tmp_path / "master.log"
    flag = [] if secure else ["--insecure"]
    with umask(0):
        master = start_logged(
            procs, tm("master", module, "--address", f"ipc://{sock}", "--no-progress", *flag), mlog,
            {**env, **config_home[1]},
        )
        wait_listening(master, mlog)
    info = os.lstat(sock)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) & 0o077 == 0, f"ipc socket mode {oct(stat.S_IMODE(info.st_mode))}"


# ------------------------------------------------------------ secret file modes


@pytest.mark.timeout(60)
@pytest.mark.parametrize("file_mode, accepted", [(0o600, True), (0o440, True), (0o640, True), (0o644, False)])
def test_a_group_readable_secret_is_fine_and_a_world_readable_one_refused(
    procs, tmp_path, recording, config_home, file_mode, accepted
):
    module, _, env = recording
    env = {**env, **config_home[1]}
    secret = tmp_path / "secret"
    assert procs.run(tm("master", "--new-secret", secret)).returncode == 0
    secret.chmod(file_mode)
    if accepted:
        mlog = tmp_path / "master.log"
        master = start_logged(
            procs, tm("master", module, "--address", tcp_address(), "--secret-file", secret, "--no-progress"), mlog,
            env,
        )
        wait_listening(master, mlog)
        assert "WARNING" not in text(mlog), text(mlog)  # 0440: Kubernetes' mode for a pod's group
    else:
        result = procs.run(tm("master", module, "--address", tcp_address(), "--secret-file", secret), env=env)
        assert result.returncode == 2, (result.returncode, result.stderr)
        one_error_line(result, str(secret), "chmod 600")


# ---------------------------------------------------------- tm-status --watch


class FakeMaster:
    """A ROUTER holding the default secret, answering STATUS with a snapshot that names `state_file`.

    It answers `answers` questions, then none: tm-status --watch then
    decides the master went away and looks at the state file.
    """

    def __init__(self, address: str, state_file: str, answers: int = 1) -> None:
        import zmq

        from taskmaster.wire import protocol, security

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        security.keys_for(None, False, address).secure_server(self.sock)
        self.sock.bind(address)
        self.snapshot = {"state_file": state_file, "failures_file": state_file, "ended": None, "finished": 0}
        self.kind = protocol.STATUS
        self.answers = answers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, *_ = self.sock.recv_multipart()
            if self.answers > 0:
                self.answers -= 1
                self.sock.send_multipart([identity, self.kind, json.dumps(self.snapshot).encode()])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.context.term()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["fifo", "symlink"])
def test_watch_opens_only_a_regular_state_file(procs, tmp_path, config_home, monkeypatch, target):
    """A master names the state file; --watch must not block on a FIFO nor follow a link it names."""
    home, extra = config_home
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))  # the fake master holds the same default secret
    real = tmp_path / "real.state"
    real.write_text(json.dumps({"complete": True, "finished": 5, "failed": 0}))
    path = tmp_path / "named.state"
    if target == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(real)
    address = tcp_address()
    fake = FakeMaster(address, str(path))
    try:
        result = procs.run(
            tm("status", "--address", address, "--watch", "0.1", "--json", "--timeout", "500"), timeout=40,
            env=extra,
        )
    finally:
        fake.close()
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "cannot be read here" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_commands_started_together_agree_on_the_new_default_secret(procs, tmp_path, recording, config_home):
    """Master and slaves started at once, before any secret exists: one is made, and all of them use it."""
    module, record, env = recording
    home, extra = config_home
    env = {**env, **extra}
    address = tcp_address()
    mlog = tmp_path / "master.log"
    master = start_logged(procs, tm("master", module, "n=400", "--address", address, "--no-progress"), mlog, env)
    slaves = [
        start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), tmp_path / f"s{i}.log", env)
        for i in range(4)
    ]
    assert wait_exit(master, 90, mlog) == 0, tail(mlog)
    for i, slave in enumerate(slaves):
        assert wait_exit(slave, 30, tmp_path / f"s{i}.log") == 0, tail(tmp_path / f"s{i}.log")
    assert set(handled(record)) == set(range(400))
    assert sorted(p.name for p in (home / "taskmaster").iterdir()) == ["secret"], "a temporary file was left behind"
    assert "refused" not in text(mlog), text(mlog)


@pytest.mark.timeout(60)
def test_a_slave_with_another_hosts_default_secret_is_told_to_use_a_secret_file(procs, tmp_path, recording):
    """Another host has another default secret: played here by another XDG_CONFIG_HOME."""
    module, record, env = recording
    here = {**env, "XDG_CONFIG_HOME": str(tmp_path / "host-a"), "TASKMASTER_SECRET_FILE": ""}
    there = {**env, "XDG_CONFIG_HOME": str(tmp_path / "host-b"), "TASKMASTER_SECRET_FILE": ""}
    address = tcp_address()
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(procs, tm("master", module, "n=50", "--address", address, "--no-progress"), mlog, here)
    wait_listening(master, mlog)
    slave = start_logged(
        procs,
        tm("slave", module, "--address", address, "--timeout", "500", "--retries", "2", "--no-progress"),
        slog,
        there,
    )
    assert wait_exit(slave, 30, slog) != 0, text(slog)
    lines = [line for line in text(slog).splitlines() if "secrets differ" in line]
    assert lines, text(slog)
    assert "default secret" in lines[-1] and "another host" in lines[-1] and "--secret-file" in lines[-1], lines[-1]
    assert handled(record) == []
    assert master.poll() is None, tail(mlog)
