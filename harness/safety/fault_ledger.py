"""The durable fault ledger: every injected fault is written here first, so `drill recover` can revert it after a crash."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError
from harness.lab.paths import state_dir as lab_state

LEDGER_ENV = "DRILL_FAULT_LEDGER"
DEFAULT_LEASE_S = 3600.0


@dataclass(frozen=True)
class FaultEntry:
    """One injected fault: what, where, how to revert it (an importable function + kwargs), lease expiry."""

    id: str
    fault: str
    target: str
    revert_func: str  # "package.module:function"
    revert_kwargs: dict[str, Any]
    injected_at: float
    lease_expires_at: float
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def ledger_path(state_dir: Path | None = None) -> Path:
    """$DRILL_FAULT_LEDGER, else <lab state dir>/fault-ledger.jsonl."""
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    return (state_dir or lab_state()) / "fault-ledger.jsonl"


class FaultLedger:
    """Append-only JSONL: `inject` lines and `revert` lines; active = injected and not yet reverted."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_path()

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield f
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _append(self, f: Any, record: dict[str, Any]) -> None:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())

    def record(self, fault: str, target: str, revert_func: str, revert_kwargs: dict[str, Any], *,
               lease_s: float = DEFAULT_LEASE_S, run_id: str | None = None,
               details: dict[str, Any] | None = None) -> FaultEntry:
        """Write the fault down (fsync) before it is injected."""
        now = time.time()
        entry = FaultEntry(uuid.uuid4().hex[:12], fault, target, revert_func, dict(revert_kwargs), now, now + lease_s,
                           run_id, dict(details or {}))
        with self._locked() as f:
            self._append(f, {"op": "inject", **asdict(entry)})
        return entry

    def mark_reverted(self, entry_id: str, how: str = "rollback") -> None:
        with self._locked() as f:
            self._append(f, {"op": "revert", "id": entry_id, "at": time.time(), "how": how})

    def _records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            if isinstance(rec, dict):
                yield rec

    def injected(self) -> list[FaultEntry]:
        """Every injected fault in the ledger, reverted or not, oldest first (the activation history)."""
        out = []
        for rec in self._records():
            if rec.get("op") == "inject":
                out.append(FaultEntry(**{k: v for k, v in rec.items() if k != "op"}))
        return out

    def active(self) -> list[FaultEntry]:
        injected: dict[str, FaultEntry] = {}
        reverted: set[str] = set()
        for rec in self._records():
            if rec.get("op") == "inject":
                rec.pop("op")
                injected[rec["id"]] = FaultEntry(**rec)
            elif rec.get("op") == "revert":
                reverted.add(rec["id"])
        return [e for i, e in injected.items() if i not in reverted]

    def active_for(self, fault: str, target: str) -> list[FaultEntry]:
        return [e for e in self.active() if e.fault == fault and e.target == target]

    def active_of_run(self, run_id: str) -> list[FaultEntry]:
        """Active faults one run injected (the guard records each entry's run_id)."""
        return [e for e in self.active() if e.run_id == run_id]

    def refuse_if_active(self, run_id: str | None = None, doing: str = "") -> None:
        """Preflight: HarnessError (one line) when faults of another run (or of none) are still active."""
        others = [e for e in self.active() if run_id is None or e.run_id != run_id]
        if not others:
            return
        shown = ", ".join(f"{e.fault} on {e.target}" + (f" (run {e.run_id})" if e.run_id else "")
                          for e in others[:3]) + (", ..." if len(others) > 3 else "")
        raise HarnessError(f"{doing + ': ' if doing else ''}active faults in the ledger: run `drill recover` "
                           f"({len(others)} in {self.path}: {shown})")

    def revert(self, entry: FaultEntry, how: str = "drill recover") -> None:
        """Call the entry's revert function, then mark it reverted."""
        mod_name, _, func_name = entry.revert_func.partition(":")
        try:
            func = getattr(importlib.import_module(mod_name), func_name)
        except (ImportError, AttributeError) as e:
            raise HarnessError(f"cannot revert fault {entry.id} ({entry.fault} on {entry.target}): "
                               f"revert function {entry.revert_func!r} not found") from e
        func(**entry.revert_kwargs)
        self.mark_reverted(entry.id, how)

    def revert_all(self, how: str = "drill recover", run_id: str | None = None) -> list[tuple[FaultEntry, str | None]]:
        """Revert every active fault (only run `run_id`'s when given), newest first; returns (entry, error or
        None) per fault."""
        results = []
        entries = self.active() if run_id is None else self.active_of_run(run_id)
        for entry in sorted(entries, key=lambda e: e.injected_at, reverse=True):
            try:
                self.revert(entry, how)
                results.append((entry, None))
            except Exception as e:  # keep going: one failed revert must not strand the others
                results.append((entry, f"{type(e).__name__}: {e}"))
        return results
