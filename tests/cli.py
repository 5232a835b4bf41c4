"""The `drill` command as the tests run it: `python -m harness.cli ARGS` in a subprocess, from the checkout's root,
with the interpreter running the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "drill_cli", "drill_on"]


def drill_cli(*args: str, state: Path | str | None = None, timeout: float = 300, env: Mapping[str, str] | None = None,
              drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`drill ARGS`: the environment is this process's without the variables starting with any of `drop`, plus
    DRILL_STATE_DIR=`state` (when given) and `env`."""
    full: dict[str, Any] = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    if state is not None:
        full["DRILL_STATE_DIR"] = str(state)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def drill_on(lab: Any, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`drill ARGS --state-dir LAB` on a test's own lab (no DRILL_STATE_DIR; a wide terminal for its tables)."""
    return drill_cli(*args, "--state-dir", str(lab.state), timeout=timeout, drop=("DRILL_STATE_DIR",),
                     env={"COLUMNS": "200"})
