"""Migrate a real SQLite database to a new schema, resumably, with several processes.

Old schema::

    users(id INTEGER PRIMARY KEY, name TEXT, email_csv TEXT)

New schema::

    people(id INTEGER PRIMARY KEY, first TEXT, last TEXT)
    emails(person_id INTEGER, address TEXT)      -- one row per address

Run it (a demo database with ``rows`` users is created first if ``db`` does
not exist or has no ``users`` table)::

    tm-run examples/migrate_sqlite.py 4 db=demo.sqlite              # rows=1000000 by default
    python examples/migrate_sqlite.py --verify db=demo.sqlite       # exit 0: every user migrated once

Kill the whole run (even with SIGKILL) and run the same ``tm-run`` command
again: it resumes from its state file (in the current directory) and
finishes; ``--verify`` then passes.  ``--reset`` migrates everything again,
which leaves the same rows.

How it is safe:

* A job is a range of user ids, ``(absolute db path, start_id, stop_id)``,
  holding 1,000 users; the ranges are found by walking the primary key
  (keyset pagination), so ids need not be contiguous and the same database
  always gives the same ranges - which is what lets a resumed run continue
  exactly where it stopped: ``get_jobs(last=job)`` starts with ``job``.
* ``handle_job`` is idempotent: in one ``BEGIN IMMEDIATE`` transaction it
  deletes whatever an earlier attempt left in ``people``/``emails`` for its
  range and inserts the rows again.  A job killed half-way rolls back; a job
  that committed but was not acknowledged before the kill runs again and
  leaves the same rows.
* The database is in WAL mode and every connection waits up to 30 s for the
  write lock (``busy_timeout``), so the slave processes take turns writing
  instead of failing with "database is locked".  The master reads ``users``
  while they write, which WAL allows.

SQLite writes one transaction at a time, so more processes mostly overlap
the Python work (parsing names and addresses), not the writes; and its lock
is not fair (a waiting process polls for it), so one slave may well migrate
more ranges than another.  A job that waits longer than the busy timeout
fails with "database is locked" and is retried like any failed job.  The
sqlite3 module does not cooperate with gevent, so ``--concurrency`` above 1
gains little here; it is harmless.  A million users take about 10-20 s to
migrate with 4 slaves on a 2-core VM, plus about 6 s to create the demo data.
"""

from __future__ import annotations

import os
import pathlib
import random
import sqlite3
import sys
import time

CHUNK = 1000  # users per job
BUSY_TIMEOUT_MS = 30000
CREATE_BATCH = 20000  # demo rows inserted between two pauses that let the master answer slaves

NEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, first TEXT NOT NULL, last TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS emails (
    person_id INTEGER NOT NULL REFERENCES people(id),
    address TEXT NOT NULL,
    UNIQUE (person_id, address)
);
"""


# ----------------------------------------------------------- the mapping


def split_name(name: str | None) -> tuple[str, str]:
    """'Ada King Lovelace' -> ('Ada', 'King Lovelace'); a single word has an empty last name."""
    first, _, last = " ".join((name or "").split()).partition(" ")
    return first, last


def parse_addresses(email_csv: str | None) -> list[str]:
    """The addresses in email_csv: split on commas, blanks stripped, empties and repeats dropped."""
    seen: dict[str, None] = {}
    for part in (email_csv or "").split(","):
        address = part.strip()
        if address:
            seen.setdefault(address)
    return list(seen)


# ------------------------------------------------------------ connections


def connect(db: str, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits for locks."""
    if readonly:
        uri = pathlib.Path(os.path.abspath(db)).as_uri() + "?mode=ro"  # percent-encodes '?', '#' and '%'
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(db, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def _demo_rows(count: int, seed: int = 1):
    """Deterministic fake users: (id, name, email_csv) with 0 to 3 addresses each."""
    rng = random.Random(seed)
    firsts = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus",
              "Radia", "Tim", "Linus", "Guido", "Sophie", "John"]
    lasts = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
             "Wirth", "Perlman", "Berners-Lee", "Torvalds", "van Rossum", "Wilson", "von Neumann"]
    domains = ["example.com", "example.org", "mail.test"]
    for user_id in range(1, count + 1):
        first, last = rng.choice(firsts), rng.choice(lasts)
        local = f"{first}.{last}".lower().replace(" ", "")
        n = rng.randrange(4)
        addresses = [f"{local}{user_id}@{domains[k]}" for k in rng.sample(range(3), n)]
        separator = rng.choice([",", ", "])  # real data is never tidy
        yield user_id, f"{first} {last}", separator.join(addresses) if addresses else None


def create_demo(db: str, rows: int) -> None:
    """Create the old schema with `rows` users, in one transaction (all or nothing)."""
    conn = connect(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email_csv TEXT)")
            batch = []
            for row in _demo_rows(rows):
                batch.append(row)
                if len(batch) == CREATE_BATCH:
                    conn.executemany("INSERT INTO users VALUES (?, ?, ?)", batch)
                    batch.clear()
                    # Under tm-master time.sleep is gevent's (monkey patching): this lets the
                    # master answer its slaves while a large demo database is being built.
                    time.sleep(0)
            conn.executemany("INSERT INTO users VALUES (?, ?, ?)", batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def prepare(db: str, rows: int) -> bool:
    """Make sure `db` has users and the new tables; True if the demo data was just created."""
    created = False
    conn = connect(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: every later connection uses WAL
        if not has_table(conn, "users"):
            conn.close()
            create_demo(db, rows)
            created = True
            conn = connect(db)
        conn.executescript(NEW_SCHEMA)
    finally:
        conn.close()
    return created


# -------------------------------------------------------------- taskmaster


def _start_id(last) -> int | None:
    """Where to start: the job a resumed run gives back, or an id; None means the beginning."""
    if isinstance(last, tuple):
        return last[1]
    if last in (0, "0", None, ""):
        return None
    return int(last)


def get_jobs(last=0, db="demo.sqlite", rows="1000000", **kwargs):
    """Yield (db, start_id, stop_id) ranges of CHUNK users each, from `last` on."""
    db = os.path.abspath(db)
    created = prepare(db, int(rows))
    start = _start_id(last)
    if created and start is not None:
        raise RuntimeError(
            f"{db} was just created with demo data, but this run resumes a migration of an earlier "
            "database; run with --reset to migrate this one from the beginning"
        )
    conn = connect(db, readonly=True)
    try:
        (max_id,) = conn.execute("SELECT max(id) FROM users").fetchone()
        if start is None:
            (start,) = conn.execute("SELECT min(id) FROM users").fetchone()
        while start is not None and start <= max_id:
            # The first id of the next range: fetched completely, so that no read
            # transaction stays open between two jobs (it would stall WAL checkpoints).
            row = conn.execute("SELECT id FROM users WHERE id >= ? ORDER BY id LIMIT 1 OFFSET ?",
                               (start, CHUNK)).fetchone()
            stop = row[0] if row else max_id + 1
            yield (db, start, stop)
            start = row[0] if row else None
    finally:
        conn.close()


def count_jobs(db="demo.sqlite", rows="1000000", **kwargs):
    """How many ranges get_jobs yields in all (read-only: nothing is created here)."""
    db = os.path.abspath(db)
    users = None
    if os.path.exists(db):
        conn = connect(db, readonly=True)
        try:
            if has_table(conn, "users"):
                (users,) = conn.execute("SELECT count(*) FROM users").fetchone()
        finally:
            conn.close()
    if users is None:
        users = int(rows)
    return -(-users // CHUNK)


def handle_job(job):
    """Migrate the users with start_id <= id < stop_id: delete, then insert, in one transaction."""
    db, start, stop = job
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now (waiting up to the busy timeout)
        try:
            users = conn.execute("SELECT id, name, email_csv FROM users WHERE id >= ? AND id < ?",
                                 (start, stop)).fetchall()
            conn.execute("DELETE FROM emails WHERE person_id >= ? AND person_id < ?", (start, stop))
            conn.execute("DELETE FROM people WHERE id >= ? AND id < ?", (start, stop))
            conn.executemany("INSERT INTO people (id, first, last) VALUES (?, ?, ?)",
                             [(user_id, *split_name(name)) for user_id, name, _ in users])
            conn.executemany("INSERT INTO emails (person_id, address) VALUES (?, ?)",
                             [(user_id, address) for user_id, _, csv in users for address in parse_addresses(csv)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


# ------------------------------------------------------------ verification


def _fingerprint(items) -> int:
    """An order-independent fingerprint of a multiset (equal multisets, equal numbers)."""
    total = 0
    for item in items:
        total = (total + hash(item)) & 0xFFFFFFFFFFFFFFFF
    return total


def verify(db: str) -> tuple[bool, str]:
    """Was every user migrated exactly once, with the right names and addresses?"""
    if not os.path.exists(db):
        return False, f"FAIL: {db} does not exist"
    conn = connect(db, readonly=True)
    try:
        missing = [t for t in ("users", "people", "emails") if not has_table(conn, t)]
        if missing:
            return False, f"FAIL: {db} has no table {', '.join(missing)} (not migrated yet?)"
        conn.execute("BEGIN")  # one consistent snapshot for every query below
        (users,) = conn.execute("SELECT count(*) FROM users").fetchone()
        (people, distinct_people) = conn.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone()
        (emails,) = conn.execute("SELECT count(*) FROM emails").fetchone()
        (not_migrated,) = conn.execute(
            "SELECT count(*) FROM users WHERE id NOT IN (SELECT id FROM people)").fetchone()
        (strangers,) = conn.execute(
            "SELECT count(*) FROM people WHERE id NOT IN (SELECT id FROM users)").fetchone()
        (orphans,) = conn.execute(
            "SELECT count(*) FROM emails WHERE person_id NOT IN (SELECT id FROM people)").fetchone()
        (duplicate_emails,) = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM emails GROUP BY person_id, address HAVING count(*) > 1)").fetchone()
        expected_people, expected_emails, addresses = 0, 0, 0
        for user_id, name, csv in conn.execute("SELECT id, name, email_csv FROM users"):
            expected_people = (expected_people + hash((user_id, *split_name(name)))) & 0xFFFFFFFFFFFFFFFF
            for address in parse_addresses(csv):
                addresses += 1
                expected_emails = (expected_emails + hash((user_id, address))) & 0xFFFFFFFFFFFFFFFF
        actual_people = _fingerprint(conn.execute("SELECT id, first, last FROM people"))
        actual_emails = _fingerprint(conn.execute("SELECT person_id, address FROM emails"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    problems = []
    if people != users:
        problems.append(f"{people} people for {users} users")
    if distinct_people != people:
        problems.append(f"{people - distinct_people} duplicate people ids")
    if not_migrated:
        problems.append(f"{not_migrated} users not migrated")
    if strangers:
        problems.append(f"{strangers} people that are no user")
    if emails != addresses:
        problems.append(f"{emails} emails for {addresses} addresses in email_csv")
    if duplicate_emails:
        problems.append(f"{duplicate_emails} duplicated emails")
    if orphans:
        problems.append(f"{orphans} emails of nobody")
    if not problems and actual_people != expected_people:
        problems.append("names in people differ from users")
    if not problems and actual_emails != expected_emails:
        problems.append("addresses in emails differ from users.email_csv")
    if problems:
        return False, f"FAIL: {db}: " + "; ".join(problems)
    return True, f"OK: {db}: {users} users migrated exactly once ({people} people, {emails} emails)"


def main(argv: list[str]) -> int:
    usage = f"usage: python {sys.argv[0]} --verify [db=PATH]"
    if "--verify" not in argv:
        print(usage, file=sys.stderr)
        return 2
    options = dict(arg.partition("=")[::2] for arg in argv if arg != "--verify")
    if set(options) - {"db", "rows"}:
        print(usage, file=sys.stderr)
        return 2
    ok, message = verify(os.path.abspath(options.get("db", "demo.sqlite")))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
