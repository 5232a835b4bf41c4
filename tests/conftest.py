"""Shared fixtures: a throwaway PostgreSQL for database-level tests, and the embedded lab."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from harness.lab.manager import STARTS_LOG_ENV

# Every drill records itself in a run history (harness/report/history.py): the tests' runs go to a throwaway one,
# not the checkout's reports/history.sqlite (a test about the history names its own).
if not os.environ.get("DRILL_HISTORY"):
    os.environ["DRILL_HISTORY"] = str(Path(tempfile.mkdtemp(prefix="drill-test-history-")) / "history.sqlite")
# Every cold lab start (in this process, an xdist worker or a `drill` subprocess) appends a line here; the summary
# at the end counts them (harness/lab/manager.py STARTS_LOG_ENV). Set in the controller, inherited by the workers.
if not os.environ.get(STARTS_LOG_ENV):
    os.environ[STARTS_LOG_ENV] = str(Path(tempfile.mkdtemp(prefix="drill-test-labs-")) / "lab-starts.jsonl")

# With `-n 2` (README; the default is serial) the suite runs on two xdist workers. Each worker has its own session lab
# (steps/common.py drill_lab). The tests of one module share module fixtures and often one lab's state, so a module is
# one work unit that runs on one worker; the modules in SPREAD hold independent drills that share nothing but the
# session lab (every Gherkin scenario, every interrupted phase), and each of their tests is a unit of its own.
# (xdist's own loadgroup marks name their group in the node id, which pytest 9 no longer lets a plugin change; the
# units are therefore told apart here, by node id: DrillScheduling.)
SPREAD = ("tests/test_features.py", "tests/integration/test_interrupt_phases.py")
#: units that start first (xdist hands them out in collection order): the longest drills first, quick unit tests last
FIRST = ("tests/integration/test_wheel_install.py", "tests/integration/test_interrupt_phases.py")


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or the test itself in a SPREAD module."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in SPREAD else path


class DrillScheduling(LoadScopeScheduling):
    """Load scheduling by work_unit (a module, or one test of a SPREAD module)."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `-p no:xdist` runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") in ("load", "loadgroup", "loadfile", "loadscope"):  # plain `-n 2` is "load"
        return DrillScheduling(config, log)
    return None


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path in FIRST:
        return 0
    if item.get_closest_marker("slow"):
        return 1
    return 2 if item.get_closest_marker("integration") else 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the slow units first (every worker orders alike; xdist checks the collections match)."""
    if not hasattr(config, "workerinput"):
        return
    rank: dict[str, int] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        rank[unit] = min(rank.get(unit, 9), _rank(item))
    items.sort(key=lambda it: rank[work_unit(it.nodeid)])  # stable: the order within a rank stays


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """How many labs the run started cold, and for which tests (each costs seconds of real servers starting)."""
    log = Path(os.environ[STARTS_LOG_ENV])
    if hasattr(config, "workerinput") or not log.is_file():
        return
    starts = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not starts:
        return
    total = sum(s["seconds"] for s in starts)
    terminalreporter.write_sep("-", f"{len(starts)} cold lab starts, {total:.0f} s of starting")
    for s in starts:
        terminalreporter.write_line(f"{s['seconds']:6.1f} s  {s['test'] or '(no test)'}")


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
