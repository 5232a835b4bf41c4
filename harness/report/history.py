"""The run history: every drill's report recorded in one SQLite store under reports/ (one row per run, one per service objective)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError

#: the store's file name inside the reports root
STORE_NAME = "history.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT, environment TEXT, status TEXT NOT NULL,
    exit_code INTEGER NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, duration_s REAL, dry_run INTEGER NOT NULL,
    report_dir TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS objectives (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, service TEXT NOT NULL,
    rto_s REAL, rto_target_s REAL, rpo_s REAL, rpo_target_s REAL, met INTEGER, measured INTEGER,
    PRIMARY KEY (run_id, service)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
"""


class HistoryError(HarnessError):
    """The history store cannot be read or written."""


@dataclass(frozen=True)
class Objective:
    service: str
    rto_s: float | None
    rto_target_s: float | None
    rpo_s: float | None
    rpo_target_s: float | None
    met: bool | None
    measured: bool | None


@dataclass(frozen=True)
class Run:
    """One recorded drill."""

    run_id: str
    kind: str
    target: str
    environment: str
    status: str
    exit_code: int
    started_at: str
    ended_at: str | None
    duration_s: float | None
    dry_run: bool
    report_dir: str | None
    summary: str
    objectives: tuple[Objective, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("run_id", "kind", "target", "environment", "status", "exit_code",
                                             "started_at", "ended_at", "duration_s", "dry_run", "report_dir",
                                             "summary")}
        d["objectives"] = {o.service: {"rto_s": o.rto_s, "rto_target_s": o.rto_target_s, "rpo_s": o.rpo_s,
                                       "rpo_target_s": o.rpo_target_s, "met": o.met, "measured": o.measured}
                           for o in self.objectives}
        return d


def default_path() -> Path:
    """$DRILL_HISTORY, else history.sqlite in the reports root ($DRILL_REPORTS_DIR or ./reports)."""
    if os.environ.get("DRILL_HISTORY"):
        return Path(os.environ["DRILL_HISTORY"])
    return Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / STORE_NAME


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise HistoryError(f"no run history at {str(path)!r}: no drill has been recorded there yet")
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript(_SCHEMA)
        return db
    except (sqlite3.Error, OSError) as e:
        raise HistoryError(f"run history {str(path)!r}: {e}") from e


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def record(report: Mapping[str, Any], path: Path | None = None, report_dir: Path | str | None = None) -> Path:
    """Record (or re-record: a rewritten report replaces its row) one run from its report.json document."""
    path = Path(path) if path else default_path()
    env = report.get("environment") or {}
    row = (str(report["run_id"]), str(report.get("kind", "")), str(report.get("target", "")),
           str(env.get("name", "lab")) if isinstance(env, Mapping) else str(env), str(report.get("status", "")),
           int(report.get("exit_code", 1)), str(report.get("started_at", "")), report.get("ended_at"),
           _num(report.get("duration_s")), int(bool(report.get("dry_run"))),
           str(Path(report_dir).resolve()) if report_dir else None, str(report.get("summary") or ""))
    objectives = [(row[0], str(o.get("service")), _num(o.get("rto_measured_s")), _num(o.get("rto_target_s")),
                   _num(o.get("rpo_measured_s")), _num(o.get("rpo_target_s")),
                   None if o.get("met") is None else int(bool(o.get("met"))),
                   None if o.get("measured") is None else int(bool(o.get("measured"))))
                  for o in report.get("objectives") or [] if isinstance(o, Mapping) and o.get("service")]
    with closing(_connect(path, create=True)) as db:
        try:
            with db:
                db.execute("DELETE FROM runs WHERE run_id = ?", (row[0],))
                db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
                db.executemany("INSERT INTO objectives VALUES (?,?,?,?,?,?,?,?)", objectives)
        except sqlite3.Error as e:
            raise HistoryError(f"run history {str(path)!r}: {e}") from e
    return path


def runs(path: Path | None = None, limit: int | None = None, kind: str | None = None) -> list[Run]:
    """Recorded runs, newest first (by start time)."""
    path = Path(path) if path else default_path()
    with closing(_connect(path, create=False)) as db:
        try:
            q = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY started_at DESC, run_id DESC"
            args: tuple = (kind,) if kind else ()
            if limit:
                q += " LIMIT ?"
                args += (int(limit),)
            rows = db.execute(q, args).fetchall()
            objs: dict[str, list[Objective]] = {}
            for r in db.execute("SELECT * FROM objectives ORDER BY service"):
                objs.setdefault(r[0], []).append(Objective(r[1], r[2], r[3], r[4], r[5],
                                                           None if r[6] is None else bool(r[6]),
                                                           None if r[7] is None else bool(r[7])))
        except sqlite3.Error as e:
            raise HistoryError(f"run history {str(path)!r}: {e}") from e
    return [Run(r[0], r[1], r[2] or "", r[3] or "", r[4], int(r[5]), r[6], r[7], r[8], bool(r[9]), r[10], r[11] or "",
                tuple(objs.get(r[0], ()))) for r in rows]
