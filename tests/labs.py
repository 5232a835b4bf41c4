"""Labs of a test module: a fresh state dir (readable by the unprivileged PostgreSQL user) and a lab that is always taken down."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from harness.lab.manager import Lab


@contextlib.contextmanager
def lab_state_dir(prefix: str) -> Iterator[Path]:
    """A new state dir; whatever lab runs under it at the end is taken down and the dir removed."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o755)  # as root the servers run as an unprivileged user who writes their logs here
    try:
        yield state
    finally:
        try:
            Lab(state_dir=state).down()
        finally:
            shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def fresh_lab(prefix: str, timeout: float = 120) -> Iterator[Lab]:
    """A lab of its own, up (in-process), down and removed afterwards."""
    with lab_state_dir(prefix) as state:
        the_lab = Lab(state_dir=state)
        the_lab.up(timeout=timeout)
        yield the_lab
