"""examples/sharded.py: one key space split over several masters.

The shards' ranges partition [0, n) - no overlap, no gap - for any n and
shard count; three masters on three ports, each with its own slave, handle
every key exactly once between them and keep three different state files;
and a shard resumes within its own range.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import sys
from collections import Counter

import pytest
from conftest import REPO, free_port, tm, wait_for, write_module

SHARDED = REPO / "examples" / "sharded.py"
WAITING = re.compile(r"WARNING slave (\S+): master at .* \(try \d+ of ")  # a slave up, waiting for its master


def load():
    name = "example_sharded"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SHARDED)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 100, 1001, 10**9])
@pytest.mark.parametrize("shards", [1, 3, 8, 13])
def test_shards_partition_the_keys(n, shards):
    sharded = load()
    ranges = [sharded.bounds(str(i), str(shards), str(n)) for i in range(shards)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert stop == start, ranges  # contiguous: no gap, no overlap
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1, sizes  # balanced
    for i, size in enumerate(sizes):
        assert sharded.count_jobs(shard=str(i), shards=str(shards), n=str(n)) == size
    if n <= 1001:
        keys = [k for i in range(shards) for k in sharded.get_jobs(shard=str(i), shards=str(shards), n=str(n))]
        assert keys == list(range(n))


def test_last_resumes_within_the_shard():
    sharded = load()
    assert sharded.bounds("1", "3", "30") == (10, 20)
    assert list(sharded.get_jobs(last=15, shard="1", shards="3", n="30")) == list(range(15, 20))
    assert list(sharded.get_jobs(last="10", shard="1", shards="3", n="30")) == list(range(10, 20))
    with pytest.raises(ValueError, match="not in shard 1"):
        sharded.get_jobs(last=25, shard="1", shards="3", n="30")
    for bad in ({"shard": "3", "shards": "3"}, {"shard": "-1", "shards": "3"}, {"shards": "0"}):
        with pytest.raises(ValueError):
            sharded.get_jobs(**bad)


@pytest.mark.timeout(120)
def test_three_masters_three_shards_every_key_exactly_once(procs, tmp_path):
    """shard=0,1,2 shards=3 on three ports, a slave each: [0, n) handled exactly once between them."""
    n, shards = 30_000, 3
    record = tmp_path / "handled.txt"
    env = {"SHARDED_RECORD": str(record)}
    masters, slaves, logs = [], [], []
    addresses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(shards)]
    # Each shard's slaves first, waiting for their master, so that none arrives after a (short) run ended.
    for i, address in enumerate(addresses):
        log = tmp_path / f"slave-{i}.log"
        with open(log, "w") as f:
            slaves.append(procs.start(tm("spawn", SHARDED, 2, "--address", address, "--timeout", 500, "--retries",
                                         120, "--no-progress"), env=env, stdout=f, stderr=f))
        wait_for(lambda log=log: len(set(WAITING.findall(log.read_text()))) == 2, 60,
                 what=f"the 2 slaves of shard {i} waiting")
    for i, address in enumerate(addresses):
        log = tmp_path / f"master-{i}.log"
        logs.append(log)
        with open(log, "w") as f:  # default state file, in the current directory (tmp_path)
            masters.append(procs.start(tm("master", SHARDED, f"shard={i}", f"shards={shards}", f"n={n}",
                                          "--address", address, "--no-progress"), env=env, stdout=f, stderr=f))

    for i, master in enumerate(masters):
        assert master.wait(timeout=90) == 0, logs[i].read_text()[-3000:]
        assert f"{n * (i + 1) // shards - n * i // shards} finished, 0 failed" in logs[i].read_text()
    for slave in slaves:
        assert slave.wait(timeout=30) == 0

    counts = Counter(int(line) for line in record.read_text().split())
    missing = sorted(set(range(n)) - set(counts))
    assert not missing, f"{len(missing)} keys never handled, e.g. {missing[:10]}"
    assert set(counts) == set(range(n)), "keys outside [0, n)"
    twice = [k for k, c in counts.items() if c > 1]
    assert not twice, f"{len(twice)} keys handled more than once, e.g. {twice[:10]}"

    # One state file per shard: each master names its own in its summary.
    named = [re.search(r"state in (\S+\.state)", log.read_text()) for log in logs]
    assert all(named), [log.read_text()[-500:] for log in logs]
    paths = {(tmp_path / m.group(1)).resolve() for m in named}
    assert len(paths) == shards, paths
    assert paths == {p.resolve() for p in tmp_path.glob("taskmaster-sharded*.state")}
    # Each shard's command, run again, says it is finished: the states are not mixed up.
    again = procs.run(tm("master", SHARDED, "shard=1", f"shards={shards}", f"n={n}", "--address",
                         f"tcp://127.0.0.1:{free_port()}", "--no-progress"), env=env, timeout=60)
    assert again.returncode == 0 and "this run already finished" in again.stderr, again.stderr
    assert f"{n // shards} jobs finished" in again.stderr, again.stderr


@pytest.mark.timeout(90)
def test_interrupted_shard_resumes_within_its_range(procs, tmp_path):
    """SIGINT shard 1 of 3 mid-run; the same command resumes it from its checkpoint, inside its keys."""
    n, record = 3000, tmp_path / "handled.txt"
    slow = write_module(tmp_path, "slowshard", f'''
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("sharded", {str(SHARDED)!r})
        sharded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sharded)

        def handle_job(key):
            time.sleep(0.01)
            sharded.handle_job(key)
        ''')
    env = {"SHARDED_RECORD": str(record)}
    address = f"tcp://127.0.0.1:{free_port()}"
    # --linger 0.5: each master's one slave runs keys, so it joined before the end and is told to quit
    # on its request; the default linger would hold each short master run 3 s from its start.
    command = tm("master", SHARDED, "shard=1", "shards=3", f"n={n}", "--address", address, "--size", 100,
                 "--no-progress", "--linger", 0.5)

    slave_argv = tm("slave", slow, "--address", address, "--concurrency", 5, "--timeout", 500, "--retries", 40,
                    "--no-progress")

    first = procs.start(command, env=env)
    slave = procs.start(slave_argv, env=env)
    wait_for(lambda: record.exists() and len(record.read_text().split()) >= 300, 30, what="300 keys handled")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    assert "interrupted" in err, err
    assert slave.wait(timeout=30) == 0  # told to quit by its master

    second = procs.start(command, env=env)
    slave = procs.start(slave_argv, env=env)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "resuming at job" in err, err
    assert slave.wait(timeout=30) == 0
    keys = Counter(int(line) for line in record.read_text().split())
    assert set(keys) == set(range(1000, 2000)), sorted(set(keys) ^ set(range(1000, 2000)))[:10]
    assert sum(keys.values()) - len(keys) <= 100, "more repeats than the --size jobs in flight at the interrupt"
