"""Servers a restore drill brought up beside the lab (a point-in-time recovery, a restored Valkey): recorded in
`recovered.json` in the state dir before they start, so `drill lab down` (or `drill backup discard NAME`) stops
them and removes their data, and a name is never used twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.lab import procs
from harness.lab.postgres import PgNode, PgRuntime

RECORD_FILE = "recovered.json"


def _path(state: Path) -> Path:
    return state / RECORD_FILE


def records(state: Path) -> dict[str, dict[str, Any]]:
    """Name -> record ({"kind": "postgres"|"valkey", "port", "data_dir", ...}) of every recovered server."""
    try:
        return json.loads(_path(state).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise LabError(f"unreadable record of recovered servers {_path(state)}: {e}") from e


def _write(state: Path, recs: dict[str, dict[str, Any]]) -> None:
    tmp = _path(state).with_suffix(".tmp")
    tmp.write_text(json.dumps(recs, indent=2))
    tmp.replace(_path(state))


def record(state: Path, name: str, rec: dict[str, Any]) -> None:
    """Record server `name` (before it starts); LabError when the name is taken."""
    recs = records(state)
    if name in recs:
        raise LabError(f"a recovered server named {name!r} exists already")
    recs[name] = rec
    _write(state, recs)


def update(state: Path, name: str, **fields: Any) -> None:
    recs = records(state)
    if name in recs:
        recs[name].update(fields)
        _write(state, recs)


def pg_node(rec: dict[str, Any], rt: PgRuntime) -> PgNode:
    return PgNode(f"recovered {rec.get('name', '')}".strip(), Path(rec["data_dir"]), int(rec["port"]),
                  Path(rec["log_file"]), rt)


def stop(state: Path, name: str, rt: PgRuntime | None) -> bool:
    """Stop recovered server `name` and remove its data; False when no such server is recorded."""
    recs = records(state)
    rec = recs.get(name)
    if rec is None:
        return False
    if rec["kind"] == "postgres":
        if rt is None:
            raise LabError("no PostgreSQL runtime to stop a recovered server with")
        node = pg_node(rec, rt)
        node.stop(mode="immediate", timeout=10)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        shutil.rmtree(node.socket_dir, ignore_errors=True)
    else:
        procs.stop(rec.get("pid"), 3, rec.get("pid_started"))
    for extra in rec.get("remove", []):
        shutil.rmtree(extra, ignore_errors=True)
    recs = records(state)
    recs.pop(name, None)
    _write(state, recs)
    return True


def stop_all(state: Path, rt: PgRuntime | None) -> list[str]:
    """Stop every recovered server (lab down); returns their names."""
    names = list(records(state))
    for name in names:
        stop(state, name, rt)
    _path(state).unlink(missing_ok=True)
    return names
