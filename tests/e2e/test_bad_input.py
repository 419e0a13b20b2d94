"""Bad input: one line on stderr naming the problem, exit code 2, no traceback,
and the saved state of an interrupted run left exactly as it was.

Every case runs in a directory holding the state file and failures file of a
real interrupted run of the recording module (made once for the module), so
"unchanged" is checked against files worth protecting.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    RECORDING_MODULE,
    Procs,
    error_line,
    handled,
    snapshot,
    tcp_address,
    tm,
    wait_for,
    write_module,
)

# ---------------------------------------------------------------- fixtures


@dataclass
class Saved:
    """A directory with the saved state of an interrupted run, and how to run commands there."""

    dir: Path
    module: Path  # the recording module the state belongs to (outside dir)
    state: Path
    failures: Path
    env: dict
    before: dict

    def unchanged(self) -> None:
        assert snapshot(self.dir) == self.before, "saved state or directory changed"
        assert not handled(Path(self.env["TM_RECORD"])), "jobs ran"


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """Run the recording module until some jobs finished and some failed, then SIGINT the master."""
    where = tmp_path_factory.mktemp("interrupted")
    module = write_module(where, "recjobs", RECORDING_MODULE)
    env = {"TM_RECORD": str(where / "handled.txt"), "TM_DELAY": "0.005", "TM_FAIL_EVERY": "50"}
    procs = Procs(where)
    try:
        address = tcp_address()
        master = procs.start(tm("master", module, "n=5000", "--address", address, "--size", "200",
                                "--max-retries", "0", "--no-progress"), env=env)
        slave = procs.start(tm("slave", module, "--address", address, "--concurrency", "2", "--no-progress"),
                            env=env)

        def progressed():
            states = list(where.glob("*.state"))
            failures = list(where.glob("*.failures.jsonl"))
            if not (states and failures and failures[0].stat().st_size):
                return None
            doc = json.loads(states[0].read_text())
            return doc["finished"] >= 100 and (states[0], failures[0])

        state, failures = wait_for(progressed, 60, what="a checkpoint with finished and failed jobs")
        master.send_signal(signal.SIGINT)
        _, err = master.communicate(timeout=30)
        assert master.returncode == 130, err
        slave.communicate(timeout=30)
        doc = json.loads(state.read_text())
        assert not doc["complete"] and doc["position"] > 0, doc
        yield module, {state.name: state.read_bytes(), failures.name: failures.read_bytes()}
    finally:
        procs.cleanup()


@pytest.fixture
def saved(tmp_path, interrupted_run) -> Saved:
    module, files = interrupted_run
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    [state] = [tmp_path / name for name in files if name.endswith(".state")]
    [failures] = [tmp_path / name for name in files if name.endswith(".jsonl")]
    env = {"TM_RECORD": str(tmp_path.parent / f"{tmp_path.name}-handled.txt")}
    return Saved(tmp_path, module, state, failures, env, snapshot(tmp_path))


def run_bad(procs, saved: Saved, argv: list[str], prog: str, *fragments: str) -> str:
    result = procs.run(argv, env=saved.env, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    saved.unchanged()
    return error_line(result, prog, *fragments)


# ------------------------------------------------------- targets


def with_n(command: str, target: str) -> list[str]:
    """argv of `command` for `target`: N=2 for spawn and run, n=5000 for get_jobs where it goes."""
    if command == "master":
        return tm("master", target, "n=5000", "--no-progress")
    if command == "slave":
        return tm("slave", target, "--no-progress")
    if command == "spawn":
        return tm("spawn", target, 2, "--no-progress")
    return tm("run", target, 2, "n=5000", "--no-progress")


COMMANDS = ["master", "slave", "spawn", "run"]


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_module(procs, saved, command):
    run_bad(procs, saved, with_n(command, "no_such_module_xyz"), f"tm-{command}",
            "no module named 'no_such_module_xyz'")


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_file(procs, saved, command):
    run_bad(procs, saved, with_n(command, "missing/jobs.py"), f"tm-{command}", "no such file", "jobs.py")


@pytest.mark.parametrize("command", ["master", "slave", "spawn"])
def test_missing_function(procs, saved, command):
    run_bad(procs, saved, with_n(command, f"{saved.module}:nope"), f"tm-{command}", "no function 'nope'")


@pytest.mark.parametrize("flag", ["--get-jobs-callback", "--handle-job-callback"])
def test_missing_function_tm_run(procs, saved, flag):
    run_bad(procs, saved, [*with_n("run", str(saved.module)), flag, "nope"], "tm-run", "no function 'nope'")


@pytest.mark.parametrize("command", ["master", "slave"])
@pytest.mark.parametrize("source, fragment", [
    ("raise RuntimeError('broken on purpose')\n", "RuntimeError: broken on purpose"),
    ("def get_jobs(:\n", "SyntaxError"),
    ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
], ids=["raises", "syntax", "missing-dependency"])
def test_module_that_fails_to_import(procs, saved, tmp_path_factory, command, source, fragment):
    broken = write_module(tmp_path_factory.mktemp("broken"), "brokenjobs", source)
    line = run_bad(procs, saved, with_n(command, str(broken)), f"tm-{command}", fragment)
    assert "brokenjobs" in line


# ------------------------------------------------- arguments, per command

# Every bad argument and option value is checked in-process, through each
# command's main(argv), in tests/unit/cli/test_cli_parsing.py; one case per
# command here runs the real process, so the entry points stay covered.


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_address(procs, saved, command):
    address = "udp://127.0.0.1:3050"
    run_bad(procs, saved, [*with_n(command, str(saved.module)), "--address", address], f"tm-{command}",
            "--address", repr(address), "is not an address")


def refused_address(result, saved: Saved, address: str) -> None:
    """Exit 2, no traceback, saved state unchanged, an error line naming the address.

    (That this line is the only one is checked by test_address_in_use_is_one_line.)
    """
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    saved.unchanged()
    errors = [line for line in result.stderr.splitlines() if line.startswith("tm-master: error: ")]
    assert len(errors) == 1 and address in errors[0] and "already in use" in errors[0], result.stderr


@pytest.fixture
def taken_address():
    """A TCP address some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield f"tcp://127.0.0.1:{other.getsockname()[1]}"


def test_address_in_use_by_another_program(procs, saved, taken_address):
    argv = [*with_n("master", str(saved.module)), "--address", taken_address]
    refused_address(procs.run(argv, env=saved.env, timeout=30), saved, taken_address)


def test_address_in_use_is_one_line(procs, saved, taken_address):
    """Nothing before the refusal: no 'resuming at job ...' for a run that does not resume."""
    argv = [*with_n("master", str(saved.module)), "--address", taken_address]
    error_line(procs.run(argv, env=saved.env, timeout=30), "tm-master", taken_address, "already in use")


def test_address_in_use_with_reset_keeps_saved_state(procs, saved, taken_address):
    """--reset must not discard anything (the failures file) when the command fails on bad input."""
    argv = [*with_n("master", str(saved.module)), "--address", taken_address, "--reset"]
    refused_address(procs.run(argv, env=saved.env, timeout=30), saved, taken_address)


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_address_in_use_by_another_master(procs, saved, tmp_path_factory, kind):
    other_dir = tmp_path_factory.mktemp("other-master")
    if kind == "tcp":
        address = tcp_address()
    else:
        address = f"ipc://{other_dir / 'master.sock'}"
    first = procs.start(tm("master", "taskmaster.example", "--address", address, "--no-progress"), cwd=other_dir)

    def first_is_listening() -> bool:
        assert first.poll() is None, first.communicate()[1]
        if kind == "ipc":
            return (other_dir / "master.sock").exists()
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0

    wait_for(first_is_listening, 30, what="the first master to listen")
    argv = [*with_n("master", str(saved.module)), "--address", address]
    second = procs.start(argv, env=saved.env)
    try:
        _, err = second.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        procs.kill(second)
        _, err = second.communicate()
        raise AssertionError(f"a second master on {address} did not refuse the address:\n{err}") from None
    refused_address(subprocess.CompletedProcess(argv, second.returncode, "", err), saved, address)
    assert first.poll() is None, "the first master died"


# -------------------------------------------------------- state file


def test_state_file_is_a_directory(procs, saved):
    target = saved.dir / "elsewhere.state"
    target.mkdir()
    saved.before = snapshot(saved.dir)
    run_bad(procs, saved, [*with_n("master", str(saved.module)), "--state-file", str(target)], "tm-master",
            "state file", "elsewhere.state", "is a directory")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other-json", "wrong-types", "bad-anchor"])
def test_corrupt_state_file(procs, saved, damage):
    original = saved.state.read_bytes()
    doc = json.loads(original)
    if damage == "garbage":
        data = b"\x00\xffnot a state file at all\n"
    elif damage == "truncated":
        data = original[: len(original) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "other-json":
        data = b'{"hello": "world"}\n'
    elif damage == "wrong-types":
        data = json.dumps({**doc, "position": "twelve", "resolved": "everything"}).encode()
    else:
        data = json.dumps({**doc, "anchor": "!!!not base64!!!"}).encode()
    saved.state.write_bytes(data)
    saved.before = snapshot(saved.dir)
    run_bad(procs, saved, with_n("master", str(saved.module)), "tm-master", saved.state.name, "corrupt", "--reset")


def test_corrupt_state_file_through_tm_run(procs, saved):
    """tm-run relays the master's one line and exits 2, without waiting on its slaves."""
    saved.state.write_bytes(b"{broken")
    saved.before = snapshot(saved.dir)
    run_bad(procs, saved, with_n("run", str(saved.module)), "tm-master", saved.state.name, "corrupt")


def test_saved_state_is_good(procs, saved):
    """Control for the cases above: with the saved state intact, the same command resumes."""
    address = tcp_address()
    master = procs.start([*with_n("master", str(saved.module)), "--address", address], env=saved.env)
    slave = procs.start(tm("slave", saved.module, "--address", address, "--no-progress"), env=saved.env)
    _, err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    # exit 1: jobs of the interrupted run failed for good (they are in the failures file)
    assert master.returncode == 1, err
    assert f"failed jobs are in ./{saved.failures.name}" in err
    assert snapshot(saved.dir)[saved.failures.name] == saved.before[saved.failures.name]
    position = json.loads(saved.before[saved.state.name])["position"]
    assert f"resuming at job {position}" in err
    done = handled(Path(saved.env["TM_RECORD"]))
    assert min(done) >= position and max(done) == 4999
    assert set(range(position + 200, 5000)) <= set(done)  # past the window the interrupted run held


# --------------------------------------------------- unpicklable jobs

POISON_MODULE = RECORDING_MODULE.replace(
    "        yield i\n",
    "        if i == 50 and not os.environ.get('TM_FIXED'):\n"
    "            yield lambda: i  # cannot be pickled\n"
    "        else:\n"
    "            yield i\n",
)


@pytest.mark.timeout(90)
def test_unpicklable_job_stops_the_run_then_fixed_get_jobs_resumes(procs, tmp_path, recording):
    n = 300
    _, record, env = recording
    module = write_module(tmp_path, "poisonjobs", POISON_MODULE)
    argv = tm("run", module, 2, f"n={n}", "--no-progress")

    result = procs.run(argv, env=env, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tm-master: error:")]
    assert len(errors) == 1, result.stderr
    assert "position 50" in errors[0] and "<function" in errors[0] and "lambda" in errors[0], errors[0]
    assert sorted(handled(record)) == list(range(50)), "the jobs before the unpicklable one were not all handled"
    [state] = tmp_path.glob("*.state")
    doc = json.loads(state.read_text())
    assert doc["finished"] == 50 and not doc["complete"], doc

    result = procs.run(argv, env={**env, "TM_FIXED": "1"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "resuming at job" in result.stderr
    jobs = handled(record)
    assert sorted(jobs) == list(range(n)), "each job exactly once: 0..49 before, 50.. after the fix"


@pytest.mark.parametrize("option, path, fragment", [
    ("--state-file", "missing-dir/run.state", "does not exist"),
    ("--failures-file", "missing-dir/run.failures.jsonl", "does not exist"),
    ("--failures-file", ".", "is a directory"),
])  # fmt: skip
def test_unwritable_state_or_failures_path_is_refused_before_the_run(procs, tmp_path, recording, option, path,
                                                                     fragment):
    """Found at start, in one line - not as a crash at the first checkpoint or the first failure."""
    module, record, env = recording
    result = procs.run(tm("master", module, "n=50", "--address", tcp_address(), "--no-progress", option, path),
                       env=env, timeout=30)  # fmt: skip
    error_line(result, "tm-master", option, fragment)
    assert not record.exists(), "no job may run"
    assert not (tmp_path / "missing-dir").exists()
