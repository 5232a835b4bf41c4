"""`drill report allure`: one single-file Allure HTML report of many runs, built offline by the pinned Allure CLI (npm `allure` 3 on Node), history carried between builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, UsageError

from .allure import RESULTS_DIR

#: where the checkout pins the Allure CLI (tools/allure/package.json + package-lock.json; `npm ci` there)
TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools" / "allure"
#: the history Allure 3 keeps between builds, in the reports root
HISTORY_NAME = "allure-history.jsonl"
BUILD_TIMEOUT_S = 600


class AllureUnavailable(HarnessError):
    """No Allure CLI (or no Node.js to run it) on this machine."""


@dataclass(frozen=True)
class Built:
    index: Path
    results: tuple[Path, ...]
    history: Path
    allure_version: str


def results_dirs(items: list[str], reports_root: Path) -> list[Path]:
    """The allure-results folders named by run ids (under the reports root), report dirs or allure-results dirs;
    every run of the reports root that has results when none is named. UsageError naming a bad item."""
    if not items:
        found = sorted(p for p in reports_root.glob(f"*/{RESULTS_DIR}") if p.is_dir() and any(p.iterdir()))
        if not found:
            raise UsageError(f"no Allure results under {str(reports_root)!r}: run a drill first "
                             f"(each run leaves <report dir>/{RESULTS_DIR})")
        return found
    out = []
    for item in items:
        p = Path(item)
        candidates = [p / RESULTS_DIR, p, reports_root / item / RESULTS_DIR]
        hit = next((c for c in candidates if c.is_dir() and c.name == RESULTS_DIR), None)
        if hit is None:
            raise UsageError(f"{item!r} is not a run id under {str(reports_root)!r}, a report dir or an "
                             f"{RESULTS_DIR} dir")
        if not any(hit.glob("*-result.json")):
            raise UsageError(f"{item!r}: {hit} holds no Allure result")
        out.append(hit.resolve())
    return out


def allure_command() -> list[str]:
    """How to run the Allure CLI: $DRILL_ALLURE, the checkout's pinned one (tools/allure), or `allure` on PATH;
    AllureUnavailable (one line saying what to install) when there is none."""
    node = shutil.which("node")
    given = os.environ.get("DRILL_ALLURE")
    if given:
        if not (Path(given).is_file() and os.access(given, os.X_OK)):
            raise UsageError(f"DRILL_ALLURE {given!r} is not an executable file")
        return [given]
    pinned = TOOLS_DIR / "node_modules" / ".bin" / "allure"
    if node and pinned.is_file():
        return [node, str(pinned.resolve())]
    on_path = shutil.which("allure")
    if on_path and (node or shutil.which("java")):
        return [on_path]
    if not node and not shutil.which("java"):
        raise AllureUnavailable("drill report allure needs Node.js (npm allure 3) or Java (allure-commandline 2): "
                                "neither node nor java is on PATH")
    raise AllureUnavailable(f"the Allure CLI is not installed: run `npm ci --prefix {TOOLS_DIR}` "
                            "(pinned in tools/allure/package-lock.json) or set DRILL_ALLURE")


def _version(cmd: list[str]) -> str:
    try:
        r = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AllureUnavailable(f"the Allure CLI {cmd[-1]!r} does not run: {e}") from e
    text = (r.stdout or r.stderr).strip().splitlines()
    return text[-1].strip() if r.returncode == 0 and text else ""


def build(results: list[Path], output: Path, history: Path, name: str = "drill") -> Built:
    """Generate `output/index.html` (one self-contained file: it opens from a file path) from `results`; Allure 3
    reads and appends `history` (one JSON line per build), so trends carry across builds."""
    cmd = allure_command()
    version = _version(cmd)
    output = output.resolve()
    history = history.resolve()
    history.parent.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="drill-allure-") as tmp:
        if version.startswith("2."):  # allure-commandline 2 (Java): single file, no jsonl history
            argv = [*cmd, "generate", "--single-file", "--clean", "-o", str(output), *map(str, results)]
        else:
            # the classic UI plugin: it honours ALLURE_NO_ANALYTICS (the "awesome" one always embeds an analytics
            # script that calls out when the page is opened), so the page makes no request at all
            config = {"name": name, "output": str(output), "historyPath": str(history),
                      "plugins": {"allure2": {"options": {"singleFile": True, "reportName": name}}}}
            cfg = Path(tmp) / "allurerc.json"
            cfg.write_text(json.dumps(config))
            argv = [*cmd, "generate", "--config", str(cfg), *map(str, results)]
        try:
            r = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                               env={**os.environ, "NO_COLOR": "1", "ALLURE_NO_ANALYTICS": "true"})
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HarnessError(f"allure generate failed: {e}") from e
    index = output / "index.html"
    if r.returncode != 0 or not index.is_file():
        last = " ".join(((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1].split())
        raise HarnessError(f"allure generate exited {r.returncode}: {last}")
    return Built(index, tuple(results), history, version)
