"""The example job modules in examples/, run the way the README tells users to run them."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, tm, wait_for

MIGRATE = REPO / "examples" / "migrate_sqlite.py"
FETCH = REPO / "examples" / "fetch_urls.py"


def load_example(path: Path):
    """Import an example module in this process (it is a file, not a package module)."""
    name = f"example_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def verify(procs, db: Path) -> tuple[int, str]:
    result = procs.run([PYTHON, str(MIGRATE), "--verify", f"db={db}"], timeout=60)
    return result.returncode, result.stdout.strip() + result.stderr.strip()


def count_rows(db: Path, table: str) -> int:
    """Rows in `table`, read-only (0 while the database or the table does not exist)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def state_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("taskmaster-migrate_sqlite*.state"))


# ---------------------------------------------------------------- migrate_sqlite, in this process


def test_migrate_jobs_are_resumable_ranges(tmp_path):
    mod = load_example(MIGRATE)
    db = tmp_path / "small.sqlite"
    jobs = list(mod.get_jobs(db=str(db), rows="2500"))
    assert jobs == [(str(db), 1, 1001), (str(db), 1001, 2001), (str(db), 2001, 2501)]
    assert mod.count_jobs(db=str(db), rows="999") == 3  # an existing database counts, not `rows`
    assert mod.count_jobs(db=str(tmp_path / "absent.sqlite"), rows="2500") == 3
    assert not (tmp_path / "absent.sqlite").exists()
    # Resuming: get_jobs(last=job) starts with that very job.
    assert list(mod.get_jobs(last=jobs[1], db=str(db), rows="2500")) == jobs[1:]


def test_migrate_ranges_follow_sparse_ids(tmp_path):
    mod = load_example(MIGRATE)
    db = tmp_path / "sparse.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email_csv TEXT)")
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)",
                     [(7 * i, f"Ann {i}", f"a{i}@x.test, a{i}@x.test,,b{i}@y.test") for i in range(1, 2101)])
    conn.commit()
    conn.close()
    jobs = list(mod.get_jobs(db=str(db)))
    assert [(start, stop) for _, start, stop in jobs] == [(7, 7007), (7007, 14007), (14007, 14701)]
    for job in jobs:
        mod.handle_job(job)
    ok, message = mod.verify(str(db))
    assert ok, message
    assert count_rows(db, "emails") == 2 * 2100  # repeats and empty entries are dropped


def test_migrate_handle_job_is_idempotent_and_verify_catches_damage(tmp_path):
    mod = load_example(MIGRATE)
    db = tmp_path / "idem.sqlite"
    jobs = list(mod.get_jobs(db=str(db), rows="3000"))
    ok, message = mod.verify(str(db))
    assert not ok and "3000 users not migrated" in message

    def snapshot():
        conn = sqlite3.connect(db)
        try:
            return (conn.execute("SELECT * FROM people ORDER BY id").fetchall(),
                    conn.execute("SELECT * FROM emails ORDER BY person_id, address").fetchall())
        finally:
            conn.close()

    for job in jobs:
        mod.handle_job(job)
    before = snapshot()
    mod.handle_job(jobs[1])  # a job run again after a crash
    mod.handle_job(jobs[1])
    assert snapshot() == before
    ok, message = mod.verify(str(db))
    assert ok, message

    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM people WHERE id = 1500")
    conn.execute("UPDATE emails SET address = 'someone@else.test' WHERE rowid = (SELECT max(rowid) FROM emails)")
    conn.commit()
    conn.close()
    ok, message = mod.verify(str(db))
    assert not ok and "1 users not migrated" in message


# ---------------------------------------------------------------- migrate_sqlite, with tm-run


@pytest.mark.timeout(120)
def test_migrate_sqlite_with_tm_run(procs, tmp_path):
    db = tmp_path / "demo.sqlite"
    code, message = verify(procs, db)
    assert code == 1 and message.startswith("FAIL"), message

    result = procs.run(tm("run", MIGRATE, 2, f"db={db}", "rows=20000", "--no-progress"), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "20 finished, 0 failed" in result.stderr

    code, message = verify(procs, db)
    assert code == 0, message
    assert message.startswith("OK") and "20000 users migrated exactly once" in message


@pytest.mark.timeout(180)
def test_migrate_sqlite_survives_sigkill_of_the_whole_run(procs, tmp_path):
    db = tmp_path / "demo.sqlite"
    users = 200000  # 200 jobs: enough that the kill lands mid-run
    command = tm("run", MIGRATE, 2, f"db={db}", f"rows={users}", "--no-progress")

    first = procs.start(command)
    # Mid-run: some ranges migrated, and a checkpoint written that the next run resumes from.
    wait_for(lambda: count_rows(db, "people") > 0 and state_files(tmp_path), timeout=90,
             what="the first migrated rows and a state file")
    procs.kill(first)  # SIGKILL to tm-run, the master and the slaves
    first.communicate(timeout=10)
    assert first.returncode == -9
    migrated = count_rows(db, "people")
    assert 0 < migrated < users, f"the kill did not land mid-run ({migrated} of {users} migrated)"
    state = json.loads(state_files(tmp_path)[0].read_text())
    assert not state["complete"]
    code, message = verify(procs, db)
    assert code == 1 and "users not migrated" in message, message

    second = procs.run(command, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resuming at job" in second.stderr
    assert "0 failed" in second.stderr

    code, message = verify(procs, db)
    assert code == 0, message
    assert f"{users} users migrated exactly once" in message


# ---------------------------------------------------------------- fetch_urls


def test_fetch_urls_resume_reads_only_the_page_number():
    mod = load_example(FETCH)
    assert mod._first_page(0) == 0
    assert mod._first_page("17") == 17
    assert mod._first_page("http://127.0.0.1:1234/page/42") == 42  # the port of a finished master


@pytest.mark.timeout(120)
def test_fetch_urls_with_tm_run(procs):
    result = procs.run(tm("run", FETCH, 1, "n=300", "--concurrency", "50", "--no-progress"), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "300 finished, 0 failed" in result.stderr
