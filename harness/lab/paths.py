"""Where the lab keeps its state (the state dir; as root, a place the server user can reach) and its config files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STATE_ENV = "DRILL_STATE_DIR"


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The lab state dir: `--state-dir`, else $DRILL_STATE_DIR, else ./.drill/lab."""
    raw = explicit or os.environ.get(STATE_ENV) or Path.cwd() / ".drill" / "lab"
    return Path(raw).expanduser().resolve()


def server_root(state: Path) -> Path:
    """Directory for PostgreSQL data dirs.

    As root the servers run as an unprivileged user who may not traverse the state
    dir's ancestors (e.g. /root is 0700), so their data lives under /var/lib/drill.
    """
    if os.geteuid() != 0:
        return state / "pg"
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    return Path("/var/lib/drill") / f"lab-{digest}"


def install_cache_root() -> Path:
    return Path("/var/lib/drill") if os.geteuid() == 0 else Path.home() / ".cache" / "drill"


def read_json_config(path: str | os.PathLike, what: str) -> Any:
    """A lab component's JSON config file; ConfigError (one line, naming the file) when unreadable or not JSON."""
    from harness.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {what} config {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise ConfigError(f"{what} config {path} is not JSON: {e}") from e
