"""Shared fixtures: a throwaway PostgreSQL for database-level tests, and the embedded lab."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

# Every drill records itself in a run history (harness/report/history.py): the tests' runs go to a throwaway one,
# not the checkout's reports/history.sqlite (a test about the history names its own).
os.environ.setdefault("DRILL_HISTORY", str(Path(tempfile.mkdtemp(prefix="drill-test-history-")) / "history.sqlite"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def scratch_pg():
    """A real, throwaway PostgreSQL server (no replica) for database-level tests.

    Yields the PgNode; `scratch_pg.admin_dsn()` connects to database `postgres`.
    """
    import psycopg

    from harness.lab import paths
    from harness.lab.postgres import PgNode, runtime

    base = Path(tempfile.mkdtemp(prefix="drill-scratch-"))
    os.chmod(base, 0o755)  # as root the server runs as `drill`, who must create its log here
    root = paths.server_root(base)
    rt = runtime(paths.install_cache_root())
    node = PgNode("scratch", root / "scratch", free_port(), root / "scratch.log", rt)
    node.initdb()
    node.start()
    with psycopg.connect(node.admin_dsn(), autocommit=True) as c:
        c.execute("CREATE DATABASE kerp")
    try:
        yield node
    finally:
        import shutil

        node.stop(mode="immediate")
        node.wipe()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
